/*
 * libwarmstart-rlimits.so: lets CRIU dump a task that runs as another user on a host whose root lacks
 * CAP_SYS_RESOURCE (our sandboxes: `grep CapBnd /proc/self/status` has bit 24 clear).
 *
 * CRIU 4.2 reads each task's rlimits with `syscall(__NR_prlimit64, pid, res, NULL, &old)` (criu/cr-dump.c,
 * dump_task_rlimits). prlimit(2) on a task of another uid needs CAP_SYS_RESOURCE and fails with EPERM, and the
 * whole dump fails ("Can't get rlimit 0: Operation not permitted"). /proc/PID/limits is world-readable and holds
 * the same 16 values in the kernel's order (fs/proc/base.c proc_pid_limits: a header line, then one line per
 * resource, soft limit at column 26 and hard at 47, "unlimited" for RLIM64_INFINITY). This library wraps libc's
 * syscall() and, for that one failing read (new limits NULL), answers from /proc/PID/limits; every other call,
 * and every other outcome, is passed through unchanged. A read-only query is all it ever serves: setting limits
 * (new != NULL) is never touched, so no privilege is gained.
 *
 * scripts/setup-host builds it into the CRIU prefix and adds it to criu's DT_NEEDED (patchelf --add-needed), so it
 * is loaded wherever that CRIU runs: on the host (podman/runc, docker/containerd) and inside app containers.
 * Interposing the libc wrapper prlimit64() would do nothing: CRIU does not call it there.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SOFT_COLUMN 26 /* fs/proc/base.c: "%-25s %-20s %-20s %-10s" */
#define HARD_COLUMN 47
#define NLIMITS 16 /* RLIM_NLIMITS */

struct limits64 { uint64_t cur, max; };

static int parse_value(const char *text, uint64_t *out)
{
	char *end;
	if (strncmp(text, "unlimited", 9) == 0) {
		*out = UINT64_MAX; /* RLIM64_INFINITY */
		return 0;
	}
	errno = 0;
	*out = strtoull(text, &end, 10);
	return (errno || end == text) ? -1 : 0;
}

/* The limits of task `pid` for `resource` from /proc/PID/limits; 0 on success. */
static int limits_from_proc(long pid, long resource, struct limits64 *old)
{
	char path[64], buf[4096];
	ssize_t n, got = 0;
	int fd, line = 0;
	char *p;

	if (resource < 0 || resource >= NLIMITS)
		return -1;
	snprintf(path, sizeof(path), "/proc/%ld/limits", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	while (got < (ssize_t)sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += n;
	close(fd);
	buf[got] = '\0';
	for (p = buf; p && *p; line++) {
		char *next = strchr(p, '\n');
		if (next)
			*next++ = '\0';
		if (line == resource + 1) { /* line 0 is the header */
			if (strlen(p) <= HARD_COLUMN)
				return -1;
			if (parse_value(p + SOFT_COLUMN, &old->cur) || parse_value(p + HARD_COLUMN, &old->max))
				return -1;
			return 0;
		}
		p = next;
	}
	return -1;
}

typedef long (*syscall_fn)(long, ...);

long syscall(long number, ...)
{
	static syscall_fn real;
	long a1, a2, a3, a4, a5, a6, ret;
	int saved;
	va_list ap;

	va_start(ap, number);
	a1 = va_arg(ap, long); a2 = va_arg(ap, long); a3 = va_arg(ap, long);
	a4 = va_arg(ap, long); a5 = va_arg(ap, long); a6 = va_arg(ap, long);
	va_end(ap);
	if (!real)
		real = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
	ret = real(number, a1, a2, a3, a4, a5, a6);
	if (ret == -1 && errno == EPERM && number == SYS_prlimit64 && a1 > 0 && a3 == 0 && a4 != 0) {
		saved = errno;
		if (limits_from_proc(a1, a2, (struct limits64 *)a4) == 0)
			return 0;
		errno = saved;
	}
	return ret;
}
