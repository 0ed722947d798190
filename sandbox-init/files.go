// The app's file changes: what it wrote on the container's root filesystem after boot is captured with the dump
// and put back before a restore (defensively: relative names, no "..", no writing through a symlink).
package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bootTime is when PID 1 (this container's init) started: files whose inode changed after it were made or
// changed by the app, and must be put back before a restore. Precise to a clock tick: the start, in ticks since
// boot (/proc/1/stat), against the time since boot now (/proc/uptime, in hundredths), both on CLOCK_BOOTTIME. Not
// /proc/stat's btime, which is whole seconds: a second of slack took in every file of an image built just before
// its container started (a demo builds its image and snapshots it at once) and put 8,756 of them (38 MB) back
// at every restore, 1.5 s of each one.
func bootTime() (time.Time, error) {
	fields, err := statFields(1)
	if err != nil {
		return time.Time{}, err
	}
	if len(fields) < 20 {
		return time.Time{}, errors.New("/proc/1/stat: too few fields")
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64) // field 22 of stat: starttime, in clock ticks after boot
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	uptime, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return time.Time{}, err
	}
	up, err := strconv.ParseFloat(strings.Fields(string(uptime) + " x")[0], 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("/proc/uptime: %v", err)
	}
	sinceStart := time.Duration(up*float64(time.Second)) - time.Duration(ticks)*10*time.Millisecond
	// Margin: two ticks of the start's and the uptime's resolution, and the coarse clock file times come from.
	return now.Add(-sinceStart).Add(-30 * time.Millisecond), nil
}

// captureChanged writes every file on the root filesystem (and in /dev/shm) whose inode changed after `since`
// into a tar: what the app created or modified (the JVM's hsperfdata, temp dirs, logs). Other mounts (volumes,
// the runtime's /etc/hosts, ours) are not the app's to carry.
func captureChanged(out string, since time.Time, skip []string) (int, error) {
	var root syscall.Stat_t
	if err := syscall.Lstat("/", &root); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	count := 0
	walk := func(top string, sameDev bool) error {
		return filepath.Walk(top, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return nil // vanished or unreadable: not ours to carry
			}
			st := info.Sys().(*syscall.Stat_t)
			if skipped(top, path, skip) || (sameDev && st.Dev != root.Dev) {
				if info.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if path == top || time.Unix(st.Ctim.Sec, st.Ctim.Nsec).Before(since) {
				return nil
			}
			if !info.Mode().IsRegular() && !info.IsDir() && info.Mode()&os.ModeSymlink == 0 {
				return nil // sockets, fifos, devices: CRIU or the runtime recreate those
			}
			if err := addFile(tw, path, info, st); err != nil {
				return err
			}
			count++
			return nil
		})
	}
	if err := walk("/", true); err != nil {
		return count, err
	}
	if err := walk("/dev/shm", false); err != nil {
		return count, err
	}
	return count, tw.Close()
}

// skipped tells whether `path`, met in the walk of `top`, lies under one of the skipped dirs ("/dev" is skipped in
// the walk of "/", not in that of "/dev/shm").
func skipped(top, path string, skip []string) bool {
	for _, s := range skip {
		if top != "/" && (top == s || strings.HasPrefix(top, s+"/")) {
			continue
		}
		if path == s || strings.HasPrefix(path, s+"/") {
			return true
		}
	}
	return false
}

// addFile writes one file, dir or symlink to the tar with its numeric owner and, for a regular file, its content.
func addFile(tw *tar.Writer, path string, info os.FileInfo, st *syscall.Stat_t) error {
	link := ""
	if info.Mode()&os.ModeSymlink != 0 {
		link, _ = os.Readlink(path)
	}
	hdr, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	hdr.Name = strings.TrimPrefix(path, "/")
	hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	hdr.Uname, hdr.Gname = "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return nil
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = io.CopyN(tw, src, hdr.Size)
	return err
}

// ownFilesystems are the mount points whose files captureChanged carries: the container's root and its /dev/shm.
var ownFilesystems = map[string]bool{"/": true, "/dev/shm": true}

// mountPoints lists the mount points in a mountinfo file (proc(5): the fifth field, octal escapes undone).
func mountPoints(mountinfo io.Reader) ([]string, error) {
	data, err := io.ReadAll(io.LimitReader(mountinfo, 4<<20))
	if err != nil {
		return nil, err
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		point := fields[4]
		for _, esc := range []struct{ from, to string }{{`\040`, " "}, {`\011`, "\t"}, {`\012`, "\n"}, {`\134`, `\`}} {
			point = strings.ReplaceAll(point, esc.from, esc.to)
		}
		points = append(points, filepath.Clean(point))
	}
	return points, nil
}

// mountOf returns the mount point that holds path: the longest of mounts that is path or one of its parents.
func mountOf(path string, mounts []string) string {
	best := "/"
	for _, m := range mounts {
		if (path == m || strings.HasPrefix(path, m+"/")) && len(m) > len(best) {
			best = m
		}
	}
	return best
}

// extract puts the captured files back. The archive comes from our own cache (digest-verified before the
// launch), and is still read defensively: relative names only, no "..", no writing through a symlink, and
// nothing on another filesystem than the container's own (mounts lists the container's mount points, as seen
// from root): a member under a volume, the runtime's /etc/hosts or any other mount would write through to the
// host, so the whole archive is refused (the launch then starts cold, saying why).
func extract(archive, root string, mounts []string) error {
	f, err := os.Open(archive)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name, err := memberPath(hdr, root, mounts)
		if err != nil {
			return err
		}
		mode := os.FileMode(hdr.Mode).Perm() | os.FileMode(hdr.Mode)&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(name, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			_ = os.Remove(name)
			if err := os.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		case tar.TypeReg:
			_ = os.MkdirAll(filepath.Dir(name), 0o755)
			_ = os.Remove(name)
			out, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			out.Close()
			if err != nil {
				return err
			}
		default:
			continue
		}
		_ = os.Lchown(name, hdr.Uid, hdr.Gid)
		if hdr.Typeflag != tar.TypeSymlink {
			_ = os.Chmod(name, mode)
			_ = os.Chtimes(name, hdr.AccessTime, hdr.ModTime)
		}
	}
}

// memberPath is where an archive member goes under root, or why it may not go anywhere.
func memberPath(hdr *tar.Header, root string, mounts []string) (string, error) {
	rel := filepath.Clean("/" + hdr.Name)
	if rel == "/" || hasDotDot(hdr.Name) || (hdr.Typeflag == tar.TypeLink) {
		return "", fmt.Errorf("refused archive member %q", hdr.Name)
	}
	if m := mountOf(rel, mounts); !ownFilesystems[m] {
		return "", fmt.Errorf("refused archive member %q: it lies on the mount %s, not the container's own "+
			"filesystem (a volume or a file of the runtime's); nothing is written through a mount", hdr.Name, m)
	}
	name := filepath.Join(root, rel)
	if parent, err := filepath.EvalSymlinks(filepath.Dir(name)); err == nil && parent != filepath.Dir(name) {
		return "", fmt.Errorf("refused archive member %q: its directory is a symlink", hdr.Name)
	}
	return name, nil
}

func hasDotDot(name string) bool {
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}
