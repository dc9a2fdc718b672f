#!/bin/busybox sh
# PID 1 of the Soft-RoCE guest, generated into the initramfs by testbeds::softroce::image.
#
# It loads the kernel modules in /etc/modules (in that order), brings up the network,
# mounts the host's root read-only over 9p at /host and the run directory (writable 9p)
# at the same path inside it, creates rxe0, then runs the jobs the host drops into the
# run directory, each inside `chroot /host`, until the host asks it to power off.
#
# Everything it tells the host goes to the serial console as "SOFTROCE-STATUS: ..." lines:
# "ready ..." once rxe0 is usable, "failed boot: ..." or "failed rxe: ..." (then it
# powers off at once, so a failure is never mistaken for a slow boot).
#
# Kernel command line (written by testbeds::softroce::guest):
#   softroce.run=DIR         host path of the run directory (no spaces)
#   softroce.net=DEV:ADDR,.. addresses to assign, e.g. eth0:10.99.0.2/24
#   softroce.rxe=DEV         the netdev rxe0 sits on
#   softroce.gid=GID         the IPv4-mapped GID (sysfs format) whose index jobs should use
#   softroce.lifetime=SECS   the guest powers itself off after this, whatever the host does
#   softroce.disk=1          mount the ext4 virtio disk /dev/vda at DIR/scratch

/bin/busybox --install -s /bin
export PATH=/bin

status() { echo "SOFTROCE-STATUS: $*"; }
fail() {
    status "failed $*"
    poweroff -f
}
# Runs a program of the host's root (e.g. iproute2's `rdma`) with a clean environment.
on_host() { chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

for arg in $(cat /proc/cmdline); do
    case "$arg" in
        softroce.run=*) run="${arg#*=}" ;;
        softroce.net=*) net="${arg#*=}" ;;
        softroce.rxe=*) rxe_dev="${arg#*=}" ;;
        softroce.gid=*) gid="${arg#*=}" ;;
        softroce.lifetime=*) lifetime="${arg#*=}" ;;
        softroce.disk=*) disk="${arg#*=}" ;;
    esac
done
[ -n "$run" ] && [ -n "$net" ] && [ -n "$rxe_dev" ] && [ -n "$gid" ] && [ -n "$lifetime" ] \
    || fail "boot: incomplete softroce.* kernel parameters"

# A guest whose host went away must not run forever on an emulated core.
( sleep "$lifetime"; status "lifetime of ${lifetime}s is over: powering off"; poweroff -f ) &

# A module that fails to load is reported but not fatal on its own (an accelerated
# crypto variant may not suit the emulated CPU); the step that needs it fails below.
for module in $(cat /etc/modules); do
    insmod "/lib/modules/$module.ko" || echo "softroce-init: insmod $module failed"
done

ip link set lo up
for pair in $(echo "$net" | tr , ' '); do
    dev="${pair%%:*}"
    ip addr add "${pair#*:}" dev "$dev" && ip link set "$dev" up || fail "boot: configuring $pair"
done

# cache=loose: the guest keeps what it read of the host's files in its page cache. 9p's
# default reads every page from the host again, so each start of a debug server binary
# (~180 MB) took seconds. The host changes none of these files while a guest runs (the
# tests and binaries are built before the boot), and the guest cannot write here.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose hostroot /host \
    || fail "boot: mounting the host root (9p tag hostroot)"
mount -t proc proc /host/proc || fail "boot: /host/proc"
mount -t sysfs sysfs /host/sys || fail "boot: /host/sys"
mount -t devtmpfs devtmpfs /host/dev || fail "boot: /host/dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts || fail "boot: /host/dev/pts"
# Volume files live on tmpfs (or the ext4 disk): 9p cannot be mmap'd MAP_SHARED.
mount -t tmpfs -o mode=1777 shm /host/dev/shm || fail "boot: /host/dev/shm"
mount -t tmpfs -o mode=1777 tmp /host/tmp || fail "boot: /host/tmp"
mount -t tmpfs -o mode=755 run /host/run || fail "boot: /host/run"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "/host$run" \
    || fail "boot: mounting the run directory (9p tag results) at $run"
if [ "$disk" = 1 ]; then
    mount -t ext4 /dev/vda "/host$run/scratch" || fail "boot: mounting the scratch disk /dev/vda"
fi

on_host rdma link add rxe0 type rxe netdev "$rxe_dev" \
    || fail "rxe: 'rdma link add rxe0 type rxe netdev $rxe_dev' failed"
port=/sys/class/infiniband/rxe0/ports/1
tries=0
until grep -q ACTIVE "$port/state" 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -le 300 ] || fail "rxe: rxe0 port 1 not ACTIVE after 30 s ($(cat "$port/state" 2>&1))"
    usleep 100000
done
# rxe fills its GID table from the netdev's addresses; wait for the RoCE v2 IPv4 one.
# (One grep over the table: a shell loop forking per entry takes seconds under emulation.)
tries=0
gid_index=
while [ -z "$gid_index" ]; do
    for entry in $(grep -l -x "$gid" "$port"/gids/* 2>/dev/null); do
        index="${entry##*/}"
        if [ "$(cat "$port/gid_attrs/types/$index" 2>/dev/null)" = "RoCE v2" ]; then
            gid_index="$index"
            break
        fi
    done
    tries=$((tries + 1))
    [ -n "$gid_index" ] || [ "$tries" -le 300 ] || fail "rxe: no RoCE v2 GID $gid on rxe0 after 30 s"
    [ -n "$gid_index" ] || usleep 100000
done
status "ready gid_index=$gid_index uptime=$(cut -d' ' -f1 /proc/uptime)"

# The job agent: the host writes jobs/N/job.sh, then creates jobs/N/start. Jobs run in
# the background, so a server and its client can run at the same time.
n=0
while :; do
    if [ -e "/host$run/jobs/$n/start" ]; then
        chroot /host /bin/sh "$run/jobs/$n/job.sh" </dev/null >/dev/null 2>&1 &
        n=$((n + 1))
    elif [ -e "/host$run/poweroff" ]; then
        status "powering off"
        poweroff -f
    else
        usleep 50000
    fi
done
