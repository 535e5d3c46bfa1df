/* p2pshare.netlab's delay line: forwards Ethernet frames between two interfaces of
 * the root namespace, each DELAY_US microseconds late (this kernel has no netem).
 *   usage: delayfwd IF_A IF_B DELAY_US
 * AF_PACKET with PACKET_VNET_HDR, so GSO frames and checksum offload pass through
 * unchanged; up to 8 MiB of frames wait per direction (more are dropped, as a full
 * queue would). Exits when an interface is gone or the process that started it dies.
 * Compiled on first use by netlab.py with the system's C compiler. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#define RING (8u << 20) /* bytes of frames held per direction */
#define MAXF (65536 + 64)

struct ring { unsigned char *buf; size_t head, tail, used; unsigned long drops; };
struct rec { uint64_t due; uint32_t len; };

static uint64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int open_if(const char *name) {
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (fd < 0) { perror("socket"); exit(2); }
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) { perror("vnet_hdr"); exit(2); }
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) { perror("ignore_outgoing"); exit(2); }
    int size = 16 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET; sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)if_nametoindex(name);
    if (!sll.sll_ifindex) { fprintf(stderr, "no interface %s\n", name); exit(2); }
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("bind"); exit(2); }
    return fd;
}

/* records are contiguous: a record that would wrap starts at 0 (the gap is skipped) */
static int push(struct ring *r, const unsigned char *data, uint32_t len, uint64_t due) {
    size_t need = sizeof(struct rec) + len;
    size_t at = r->tail;
    if (r->used && at >= r->head) {                 /* free: [tail, RING) and [0, head) */
        if (RING - at < need) { if (r->head < need) return -1; at = 0; }
    } else if (r->used) {                           /* free: [tail, head) */
        if (r->head - at < need) return -1;
    } else { r->head = r->tail = at = 0; }
    if (at == 0 && r->tail != 0) {                   /* mark the skipped gap */
        if (RING - r->tail >= sizeof(struct rec)) { struct rec gap = {0, UINT32_MAX}; memcpy(r->buf + r->tail, &gap, sizeof gap); }
    }
    struct rec h = {due, len};
    memcpy(r->buf + at, &h, sizeof h);
    memcpy(r->buf + at + sizeof h, data, len);
    r->tail = at + need; r->used += need;
    return 0;
}

static struct rec *front(struct ring *r) {
    if (!r->used) return NULL;
    if (RING - r->head < sizeof(struct rec)) r->head = 0;
    struct rec *h = (struct rec *)(r->buf + r->head);
    if (h->len == UINT32_MAX) { r->head = 0; h = (struct rec *)r->buf; }
    return h;
}

static void pop(struct ring *r) {
    struct rec *h = front(r);
    size_t sz = sizeof *h + h->len;
    r->head = (size_t)((unsigned char *)h - r->buf) + sz;
    r->used -= sz;
    if (!r->used) r->head = r->tail = 0;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s IF_A IF_B DELAY_US\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the lab that started us is gone: so are we */
    if (getppid() == 1) return 0;
    int fd[2] = {open_if(argv[1]), open_if(argv[2])};
    uint64_t delay = (uint64_t)strtoull(argv[3], NULL, 10) * 1000ull;
    struct ring ring[2];            /* ring[i]: frames read on fd[i], to send on fd[1-i] */
    for (int i = 0; i < 2; i++) { memset(&ring[i], 0, sizeof ring[i]); ring[i].buf = malloc(RING); }
    static unsigned char frame[MAXF];
    printf("ready\n"); fflush(stdout);
    for (;;) {
        uint64_t t = now_ns(), next = UINT64_MAX;
        for (int i = 0; i < 2; i++) {
            struct rec *h;
            while ((h = front(&ring[i])) && h->due <= t) {
                if (send(fd[1 - i], (unsigned char *)(h + 1), h->len, 0) < 0 && errno == EAGAIN)
                    break; /* other errors (a link cut: ENETDOWN) drop the frame */
                pop(&ring[i]);
            }
            if ((h = front(&ring[i])) && h->due < next) next = h->due;
        }
        struct pollfd p[2] = {{fd[0], POLLIN, 0}, {fd[1], POLLIN, 0}};
        struct timespec ts, *tp = NULL;
        if (next != UINT64_MAX) {
            uint64_t wait = next > t ? next - t : 0;
            ts.tv_sec = (time_t)(wait / 1000000000ull); ts.tv_nsec = (long)(wait % 1000000000ull); tp = &ts;
        }
        if (ppoll(p, 2, tp, NULL) < 0 && errno != EINTR) { perror("ppoll"); return 1; }
        for (int i = 0; i < 2; i++) {
            if (p[i].revents & (POLLERR | POLLNVAL) && !if_nametoindex(argv[1 + i])) return 0;
            if (!(p[i].revents & POLLIN)) continue;
            for (int k = 0; k < 256; k++) {
                ssize_t n = recv(fd[i], frame, sizeof frame, 0);
                if (n <= 0) {
                    if (n < 0 && errno != EAGAIN && !if_nametoindex(argv[1 + i])) return 0;
                    break;
                }
                if (push(&ring[i], frame, (uint32_t)n, now_ns() + delay) < 0) ring[i].drops++;
            }
        }
    }
}
