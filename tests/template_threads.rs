//! A render leaves no thread behind (fuzzing found the rendering thread still tearing down
//! after render returned, which LeakSanitizer reported): the one test in this binary, so
//! that no other test's threads come and go while it counts.

use mlcli::formats::chat_template::{ChatTemplate, Message, RenderOptions};

/// Threads of this process still running: a thread that has been joined can stay listed in
/// `/proc/self/task` for a moment while the kernel finishes its exit, but it has already let go
/// of the process's memory by then (its `status` has no `VmRSS`), so those are not counted.
#[cfg(target_os = "linux")]
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("status")).ok())
        .filter(|status| status.contains("VmRSS"))
        .count()
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
