// tcp: which TCP connections a restore can keep.
package main

import (
	"os"
	"strings"
)

// loopbackOnlyTCP tells whether every connected TCP socket in this network namespace (the container's: only the
// app's tree has sockets in it) has both ends on loopback (127.0.0.0/8, ::1, ::ffff:127.x). Those belong to the
// tree itself, and CRIU restores them in a new container as they were (--tcp-established); a connection with a
// peer outside (a client, the runtime's port forwarder, a probe) cannot be restored where the container's address
// differs, so a single one makes the restore close them all (--tcp-close), as before. False when a table cannot
// be read. Listening (0A), closed (07) and TIME_WAIT (06, no owner) entries do not count.
func loopbackOnlyTCP(tables ...string) bool {
	for _, table := range tables {
		data, err := os.ReadFile(table)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			if st := f[3]; st == "0A" || st == "07" || st == "06" {
				continue
			}
			if !loopbackHex(f[1]) || !loopbackHex(f[2]) {
				return false
			}
		}
	}
	return true
}

// loopbackHex: an address of /proc/net/tcp{,6} ("0100007F:1F90", 32-bit words in host byte order, x86) on loopback.
func loopbackHex(addr string) bool {
	host, _, _ := strings.Cut(addr, ":")
	switch len(host) {
	case 8:
		return strings.HasSuffix(host, "7F")
	case 32:
		return host == "00000000000000000000000001000000" ||
			(strings.HasPrefix(host, "0000000000000000FFFF0000") && strings.HasSuffix(host, "7F"))
	}
	return false
}
