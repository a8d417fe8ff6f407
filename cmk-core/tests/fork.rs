//! The random buffer must not survive `fork`: parent and child would otherwise draw the same
//! bytes, hence the same DEKs, nonces and event ids. This binary holds this one test only, so the fork happens with no other
//! test thread running.

use std::io::Read;
use std::os::fd::FromRawFd;

use cmk_core::crypto::rng;
use cmk_core::event::EventId;

#[test]
fn parent_and_child_draw_different_bytes_after_fork() {
    // Fill this thread's buffer, so both processes would hold the same unused bytes.
    let _warm: [u8; 32] = rng::array().unwrap();
    // Fill this thread's pool of event ids, so both processes would hold the same one.
    let _warm_id = EventId::fresh();
    let mut fds = [0i32; 2];
    // SAFETY: `pipe` writes two file descriptors into the array we own.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: the child only draws from the already allocated buffer (getpid, copy,
    // possibly the getrandom syscall), writes to a pipe and calls `_exit`; it allocates
    // nothing and takes no lock another thread could hold.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut bytes = [0u8; 48];
        bytes[..32].copy_from_slice(&rng::array::<32>().unwrap_or([0; 32]));
        bytes[32..].copy_from_slice(&EventId::fresh().0);
        #[allow(unsafe_code)]
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), 48);
            libc::_exit(0);
        }
    }
    let parent: [u8; 32] = rng::array().unwrap();
    let parent_id = EventId::fresh();
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fds[1]);
    }
    // SAFETY: fds[0] is the read end we own; File closes it on drop.
    #[allow(unsafe_code)]
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut child = [0u8; 32];
    reader.read_exact(&mut child).unwrap();
    let mut child_id = [0u8; 16];
    reader.read_exact(&mut child_id).unwrap();
    let mut status = 0;
    #[allow(unsafe_code)]
    unsafe {
        libc::waitpid(pid, &mut status, 0);
    }
    assert_ne!(child, [0u8; 32], "child produced no bytes");
    assert_ne!(
        parent, child,
        "parent and child drew the same random bytes after fork"
    );
    assert_ne!(
        parent_id.0, child_id,
        "parent and child handed out the same event id after fork"
    );
}
