//! A render leaves no thread behind (fuzzing found the rendering thread still tearing down
//! after render returned, which LeakSanitizer reported): the one test in this binary, so
//! that no other test's threads come and go while it counts.

use mlcli::formats::chat_template::{ChatTemplate, Message, RenderOptions};

#[cfg(target_os = "linux")]
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[cfg(target_os = "linux")]
#[test]
fn renders_leave_no_thread_behind() {
    let t = ChatTemplate::new(
        "{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] | trim }}{% endfor %}",
    )
    .unwrap();
    let messages = [Message::new("user", " hi ")];
    let opts = RenderOptions {
        add_generation_prompt: true,
        bos_token: "<s>",
        eos_token: "</s>",
        tools: None,
        reasoning_effort: None,
        enable_thinking: None,
    };
    let before = threads();
    for _ in 0..200 {
        assert_eq!(t.render(&messages, &opts).unwrap(), "<s>user: hi");
        // Counted at once: a thread still ending when render returns shows up here.
        assert_eq!(threads(), before);
    }
}
