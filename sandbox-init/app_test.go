package main

import (
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"unsafe"
)

// The app's filter answers io_uring_setup with ENOSYS, as an engine's default seccomp profile does, and lets
// other calls through. It runs on a thread of its own, which ends with the goroutine (never unlocked).
func TestDenyIoUringAnswersENOSYSAndAllowsTheRest(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := denyIoUring(); err != nil {
			done <- err
			return
		}
		params := make([]byte, 120)
		_, _, errno := syscall.Syscall(sysIoUringSetup, 8, uintptr(unsafe.Pointer(&params[0])), 0)
		if errno != syscall.ENOSYS {
			done <- fmt.Errorf("io_uring_setup under the filter: errno %v, want ENOSYS", errno)
			return
		}
		if _, _, errno := syscall.RawSyscall(syscall.SYS_GETTID, 0, 0, 0); errno != 0 {
			done <- fmt.Errorf("gettid under the filter: %v", errno)
			return
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
