/* udp_echo.c — the baseline for the benchmarks: the simplest fast UDP echo
 * server, i.e. what any single-threaded UDP daemon could reach on this
 * machine. The load generator (loadgen.c) measures it side by side with
 * sessiond and memcached, and every figure is read as a ratio to it.
 *
 * Usage: udp_echo [-l ADDR] [-p PORT]   (default 127.0.0.1, port 0)
 * It binds, prints the port it got on stdout ("PORT\n", flushed), and runs
 * until SIGTERM or SIGINT (or until its parent dies: PR_SET_PDEATHSIG).
 *
 * How it works: one non-blocking socket; poll(2) waits for it, then a loop
 * drains it with recvmmsg(2) in batches of ECHO_BATCH and sends each batch's
 * answers with one sendmmsg(2), in the receive buffers themselves (no copy).
 * That is the same I/O skeleton as sessiond's server.c, minus the cache, so
 * the difference between the two is what sessiond's own work costs.
 *
 * Answer size: to move the same bytes as the server it stands in for, a
 * datagram that starts with the 4-byte magic "ESZ1" followed by a 32-bit
 * big-endian length L asks for an answer of L bytes (its own bytes, then
 * whatever the buffer held: the contents do not matter, only the id the
 * generator put in the first 16 bytes). L = 0 asks for no answer at all,
 * like a v1 NEW; L is clamped to [16, buffer size]. Anything else is echoed
 * as it came. A plain echo of the 36-byte request would make the baseline
 * unfairly cheap next to a GET answer of 36 + ~1100 bytes.
 *
 * Known limits: IPv4 only, one thread; a full send buffer drops the rest of
 * a batch, as sessiond does.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO_BATCH    32
#define ECHO_BUF_SIZE 65536
#define ECHO_MIN_SIZE 16 /* magic, length and the generator's 8-byte id */

static volatile sig_atomic_t echo_stop;

static void echo_on_signal(int signum)
{
    (void)signum;
    echo_stop = 1;
}

static int echo_usage(const char *why)
{
    fprintf(stderr, "udp_echo: %s\nusage: udp_echo [-l IPV4ADDR] [-p PORT]\n", why);
    return 2;
}

/* The answer length for one datagram of `len` bytes, 0 for none. */
static size_t echo_answer_len(const uint8_t *buf, size_t len)
{
    uint32_t want;

    if (len < 8 || memcmp(buf, "ESZ1", 4) != 0)
        return len;
    want = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
    if (want == 0)
        return 0;
    if (want < ECHO_MIN_SIZE)
        want = ECHO_MIN_SIZE;
    if (want > ECHO_BUF_SIZE)
        want = ECHO_BUF_SIZE;
    return want;
}

/* Drains the socket: returns when it is empty, after an error, or on a stop. */
static void echo_drain(int fd, struct mmsghdr *in, struct iovec *in_iov, struct mmsghdr *out,
                       struct iovec *out_iov, struct sockaddr_in *peers)
{
    for (;;) {
        unsigned answers = 0;
        unsigned sent = 0;
        int n;

        for (int i = 0; i < ECHO_BATCH; i++)
            in[i].msg_hdr.msg_namelen = sizeof(peers[i]);
        n = recvmmsg(fd, in, ECHO_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++) {
            size_t answer = echo_answer_len(in_iov[i].iov_base, in[i].msg_len);

            if (answer == 0)
                continue;
            out_iov[answers].iov_base = in_iov[i].iov_base;
            out_iov[answers].iov_len = answer;
            out[answers].msg_hdr.msg_name = &peers[i];
            out[answers].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
            answers++;
        }
        while (sent < answers) {
            int m = sendmmsg(fd, out + sent, answers - sent, 0);

            if (m > 0)
                sent += (unsigned)m;
            else if (m < 0 && errno == EINTR)
                continue;
            else if (m < 0 && (errno == EAGAIN || errno == ENOBUFS))
                break; /* dropped: the client counts it lost */
            else
                sent++; /* an error for the first one (e.g. ECONNREFUSED): skip it */
        }
        if (n < ECHO_BATCH)
            return;
    }
}

int main(int argc, char **argv)
{
    static struct mmsghdr in[ECHO_BATCH], out[ECHO_BATCH];
    static struct iovec in_iov[ECHO_BATCH], out_iov[ECHO_BATCH];
    static struct sockaddr_in peers[ECHO_BATCH];
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof(addr);
    struct sigaction sa;
    struct pollfd pfd;
    const char *listen_addr = "127.0.0.1";
    uint8_t *bufs = NULL;
    long port = 0;
    int rcvbuf = 4 * 1024 * 1024;
    int fd = -1;
    int opt;
    int rc = 1;

    while ((opt = getopt(argc, argv, "l:p:h")) != -1) {
        char *end;

        switch (opt) {
        case 'l':
            listen_addr = optarg;
            break;
        case 'p':
            port = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || port < 0 || port > 65535)
                return echo_usage("-p wants a port number 0..65535");
            break;
        default:
            return echo_usage("unknown option");
        }
    }
    if (optind != argc)
        return echo_usage("unexpected argument");
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, listen_addr, &addr.sin_addr) != 1)
        return echo_usage("-l wants a numeric IPv4 address");

    prctl(PR_SET_PDEATHSIG, SIGTERM);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = echo_on_signal; /* no SA_RESTART: poll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* calloc: an answer longer than its request sends bytes of the buffer
     * that were never received; they must at least be initialised. */
    bufs = calloc(ECHO_BATCH, ECHO_BUF_SIZE);
    if (bufs == NULL) {
        fprintf(stderr, "udp_echo: out of memory\n");
        goto fail;
    }
    for (int i = 0; i < ECHO_BATCH; i++) {
        in_iov[i].iov_base = bufs + (size_t)i * ECHO_BUF_SIZE;
        in_iov[i].iov_len = ECHO_BUF_SIZE;
        in[i].msg_hdr.msg_iov = &in_iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
        in[i].msg_hdr.msg_name = &peers[i];
        out[i].msg_hdr.msg_iov = &out_iov[i];
        out[i].msg_hdr.msg_iovlen = 1;
    }
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("udp_echo: socket");
        goto fail;
    }
    /* The same receive buffer sessiond asks for, so bursts queue alike. */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len) != 0) {
        fprintf(stderr, "udp_echo: cannot bind %s:%ld: %s\n", listen_addr, port, strerror(errno));
        goto fail;
    }
    printf("%u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);

    pfd.fd = fd;
    pfd.events = POLLIN;
    while (!echo_stop) {
        int ready = poll(&pfd, 1, -1);

        if (ready < 0 && errno != EINTR) {
            perror("udp_echo: poll");
            goto fail;
        }
        if (ready > 0)
            echo_drain(fd, in, in_iov, out, out_iov, peers);
    }
    rc = 0;

fail:
    if (fd >= 0)
        close(fd);
    free(bufs);
    return rc;
}
