// The working set: the pages an app touches from its restore through readiness and its warm-up traffic. A build
// records it on a trial clone restored lazily with this recorder as the page daemon instead of CRIU's: the
// recorder serves every page fault from the images and, unlike CRIU's daemon (criu/uffd.c handle_requests),
// streams nothing in the background, so every page the app touches arrives as a fault and is written down. The
// clone is discarded; `warmstart-init working-set` then marks those pages eager in the snapshot's pagemaps, so
// a lazy restore copies them up front and leaves only the rest to the page daemon.
//
// The protocol is CRIU's (criu/uffd.c send_uffd, lazy_pages_finish_restore): `criu restore --lazy-pages` connects
// to lazy-pages.socket in its work dir and sends, per restored process, its PID (int32; negative for a zombie,
// then nothing else) and its userfaultfd (SCM_RIGHTS, with one dummy byte); then LAZY_PAGES_RESTORE_FINISHED.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

const (
	RecordMode      = "record"             // LazyVar's value for a recording trial clone
	RecordMount     = "/.warmstart/record" // a writable dir of the build's, where the recorder writes FaultsFile
	FaultsFile      = "faults"             // "PID ADDRESS" (hex) per faulted page, in order
	restoreFinished = 0x52535446           // criu/uffd.c LAZY_PAGES_RESTORE_FINISHED

	// linux/userfaultfd.h
	uffdEventPagefault = 0x12
	uffdEventFork      = 0x13
	uffdEventRemap     = 0x14
	uffdEventRemove    = 0x15
	uffdEventUnmap     = 0x16
	uffdioCopy         = 0xc028aa03 // _IOWR(0xAA, 0x03, struct uffdio_copy)
	uffdioZeropage     = 0xc020aa04 // _IOWR(0xAA, 0x04, struct uffdio_zeropage)
	uffdioWake         = 0x8010aa02 // _IOR(0xAA, 0x02, struct uffdio_range)
	uffdMsgSize        = 32
)

// space is one process's address space as the recorder serves it: the lazy runs of its image (moved and cut as
// the process remaps and unmaps), the pages file, and the image PID faults are recorded under.
type space struct {
	pid   int
	runs  []movedRun
	pages *os.File
}

type movedRun struct {
	pageRun
	vaddr uint64 // the image address of `start` (differs once the process has moved the mapping)
}

type recorder struct {
	images string
	out    *os.File
	epfd   int
	mu     sync.Mutex
	spaces map[int]*space // by userfaultfd
	seen   map[[2]uint64]bool
}

// startRecorder listens on lazy-pages.socket in `work` and serves and records faults until this process ends.
func startRecorder(images, work, outDir string) error {
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(outDir, FaultsFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	sock := filepath.Join(work, LazySocket)
	_ = os.Remove(sock)
	lfd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := syscall.Bind(lfd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		return err
	}
	if err := syscall.Listen(lfd, 1); err != nil {
		return err
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	r := &recorder{images: images, out: out, epfd: epfd, spaces: map[int]*space{}, seen: map[[2]uint64]bool{}}
	go r.accept(lfd)
	go r.serve()
	return nil
}

func (r *recorder) accept(lfd int) {
	conn, _, err := syscall.Accept4(lfd, syscall.SOCK_CLOEXEC)
	syscall.Close(lfd)
	if err != nil {
		fmt.Fprintf(os.Stderr, "warmstart-init: recorder: accept: %v\n", err)
		return
	}
	defer syscall.Close(conn)
	for {
		var word [4]byte
		if _, err := readFull(conn, word[:]); err != nil {
			return // criu restore is done with us
		}
		pid := int32(binary.LittleEndian.Uint32(word[:]))
		if uint32(pid) == restoreFinished {
			continue
		}
		if pid < 0 { // a zombie: nothing follows
			continue
		}
		oob := make([]byte, syscall.CmsgSpace(4))
		_, oobn, _, _, err := syscall.Recvmsg(conn, make([]byte, 1), oob, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warmstart-init: recorder: receiving the userfaultfd of %d: %v\n", pid, err)
			return
		}
		msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			fmt.Fprintf(os.Stderr, "warmstart-init: recorder: no userfaultfd for %d\n", pid)
			return
		}
		fds, err := syscall.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			fmt.Fprintf(os.Stderr, "warmstart-init: recorder: no userfaultfd for %d\n", pid)
			return
		}
		sp, err := r.openSpace(int(pid))
		if err != nil {
			fmt.Fprintf(os.Stderr, "warmstart-init: recorder: %v\n", err)
			syscall.Close(fds[0])
			continue // its faults would hang: the clone fails its probe, and the build records nothing
		}
		r.add(fds[0], sp)
	}
}

func readFull(fd int, buf []byte) (int, error) {
	for got := 0; got < len(buf); {
		n, err := syscall.Read(fd, buf[got:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		if n == 0 {
			return got, fmt.Errorf("EOF")
		}
		got += n
	}
	return len(buf), nil
}

func (r *recorder) openSpace(pid int) (*space, error) {
	pm, err := readPagemap(filepath.Join(r.images, fmt.Sprintf("pagemap-%d.img", pid)))
	if err != nil {
		return nil, err
	}
	pages, err := os.Open(filepath.Join(r.images, fmt.Sprintf("pages-%d.img", pm.PagesID)))
	if err != nil {
		return nil, err
	}
	sp := &space{pid: pid, pages: pages}
	for _, run := range pm.lazyRuns() {
		sp.runs = append(sp.runs, movedRun{pageRun: run, vaddr: run.start})
	}
	return sp, nil
}

func (r *recorder) add(fd int, sp *space) {
	r.mu.Lock()
	r.spaces[fd] = sp
	r.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	_ = syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
}

func (r *recorder) serve() {
	events := make([]syscall.EpollEvent, 16)
	msg := make([]byte, uffdMsgSize)
	for {
		n, err := syscall.EpollWait(r.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			for {
				got, err := syscall.Read(fd, msg)
				if err == syscall.EAGAIN || err == syscall.EINTR {
					break
				}
				if err != nil || got == 0 { // the process is gone
					_ = syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
					syscall.Close(fd)
					r.mu.Lock()
					delete(r.spaces, fd)
					r.mu.Unlock()
					break
				}
				r.handle(fd, msg)
			}
		}
	}
}

func (r *recorder) handle(fd int, msg []byte) {
	r.mu.Lock()
	sp := r.spaces[fd]
	r.mu.Unlock()
	if sp == nil {
		return
	}
	arg := func(i int) uint64 { return binary.LittleEndian.Uint64(msg[8+8*i:]) }
	switch msg[0] {
	case uffdEventPagefault:
		r.fault(fd, sp, arg(1)&^(pageSize-1))
	case uffdEventFork: // a process forked after the restore: its pages are still the parent's image's
		child := int(binary.LittleEndian.Uint32(msg[8:]))
		r.add(child, &space{pid: sp.pid, runs: append([]movedRun(nil), sp.runs...), pages: sp.pages})
	case uffdEventRemap:
		sp.move(arg(0), arg(1), arg(2))
	case uffdEventRemove, uffdEventUnmap:
		sp.cut(arg(0), arg(1))
	}
}

// fault serves one page: its bytes from the pages file, or zeros where the image has none; and records it.
func (r *recorder) fault(fd int, sp *space, addr uint64) {
	run := sp.find(addr)
	var err error
	if run != nil && run.offset >= 0 {
		buf := make([]byte, pageSize)
		if _, err = sp.pages.ReadAt(buf, run.offset+int64(addr-run.start)); err == nil {
			copy := struct {
				dst, src, len, mode uint64
				copied              int64
			}{addr, uint64(uintptr(unsafe.Pointer(&buf[0]))), pageSize, 0, 0}
			err = ioctl(fd, uffdioCopy, unsafe.Pointer(&copy))
			runtime.KeepAlive(buf)
		}
	} else {
		zero := struct {
			start, len, mode uint64
			zeropage         int64
		}{addr, pageSize, 0, 0}
		err = ioctl(fd, uffdioZeropage, unsafe.Pointer(&zero))
	}
	if err == syscall.EAGAIN { // the mapping is changing: let the thread fault again once it has
		rng := struct{ start, len uint64 }{addr, pageSize}
		_ = ioctl(fd, uffdioWake, unsafe.Pointer(&rng))
		return
	}
	if run == nil {
		return
	}
	key := [2]uint64{uint64(sp.pid), run.vaddr + (addr - run.start)}
	if !r.seen[key] {
		r.seen[key] = true
		fmt.Fprintf(r.out, "%d %x\n", key[0], key[1])
	}
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

func (sp *space) find(addr uint64) *movedRun {
	i := sort.Search(len(sp.runs), func(i int) bool { return sp.runs[i].end > addr })
	if i < len(sp.runs) && sp.runs[i].start <= addr {
		return &sp.runs[i]
	}
	return nil
}

// split cuts runs at addr, so that no run straddles it.
func (sp *space) split(addr uint64) {
	for i, run := range sp.runs {
		if run.start < addr && addr < run.end {
			head, tail := run, run
			head.end = addr
			tail.start, tail.vaddr = addr, run.vaddr+(addr-run.start)
			if run.offset >= 0 {
				tail.offset = run.offset + int64(addr-run.start)
			}
			sp.runs = append(sp.runs[:i], append([]movedRun{head, tail}, sp.runs[i+1:]...)...)
			return
		}
	}
}

func (sp *space) cut(start, end uint64) {
	sp.split(start)
	sp.split(end)
	kept := sp.runs[:0]
	for _, run := range sp.runs {
		if run.end <= start || run.start >= end {
			kept = append(kept, run)
		}
	}
	sp.runs = kept
}

func (sp *space) move(from, to, length uint64) {
	sp.split(from)
	sp.split(from + length)
	for i := range sp.runs {
		if sp.runs[i].start >= from && sp.runs[i].end <= from+length {
			sp.runs[i].start = sp.runs[i].start - from + to
			sp.runs[i].end = sp.runs[i].end - from + to
		}
	}
	sort.Slice(sp.runs, func(i, j int) bool { return sp.runs[i].start < sp.runs[j].start })
}

// workingSet is `warmstart-init working-set --images DIR --faults FILE`: mark the recorded pages eager in the
// images' pagemaps (rewritten atomically, 0600). Run by the build on the host, on its staged snapshot.
func workingSet(args []string) {
	f, _ := flags(args, "images", "faults")
	if f["images"] == "" || f["faults"] == "" {
		fail(ExitUsage, "working-set: --images DIR and --faults FILE are required")
	}
	byPid, err := readFaults(f["faults"])
	if err != nil {
		fail(ExitUsage, "working-set: %v", err)
	}
	eager, lazy := 0, 0
	for pid, pages := range byPid {
		path := filepath.Join(f["images"], fmt.Sprintf("pagemap-%d.img", pid))
		pm, err := readPagemap(path)
		if err != nil {
			fail(ExitUsage, "working-set: %v", err)
		}
		eager += pm.makeEager(pages)
		for _, e := range pm.Entries {
			if e.Flags&peLazy != 0 {
				lazy += int(e.NrPages)
			}
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, pm.encode(), 0o600); err != nil {
			fail(ExitUsage, "working-set: %v", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			fail(ExitUsage, "working-set: %v", err)
		}
	}
	fmt.Printf("%d %d\n", eager, lazy) // pages made eager, pages left lazy (in the processes that faulted)
}

func readFaults(path string) (map[int]map[uint64]bool, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	byPid := map[int]map[uint64]bool{}
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		parts := strings.Fields(scanner.Text())
		if len(parts) != 2 {
			return nil, fmt.Errorf("%s: bad line %q", path, scanner.Text())
		}
		pid, err1 := strconv.Atoi(parts[0])
		addr, err2 := strconv.ParseUint(parts[1], 16, 64)
		if err1 != nil || err2 != nil || pid < 1 || addr%pageSize != 0 {
			return nil, fmt.Errorf("%s: bad line %q", path, scanner.Text())
		}
		if byPid[pid] == nil {
			byPid[pid] = map[uint64]bool{}
		}
		byPid[pid][addr] = true
	}
	return byPid, scanner.Err()
}
