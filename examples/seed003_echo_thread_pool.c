/* seed003_echo_thread_pool.c - seed 003's echo server on a thread pool of
 * 128 workers, driven by real clients over loopback TCP.
 *
 *     def echo_client(sock, client_addr):
 *         while True:
 *             msg = sock.recv(65536)
 *             if not msg: break
 *             sock.sendall(msg)
 *         sock.close()
 *
 *     def echo_server(addr):
 *         pool = ThreadPoolExecutor(128)
 *         sock = socket(AF_INET, SOCK_STREAM); sock.bind(addr); sock.listen(5)
 *         while True:
 *             client_sock, client_addr = sock.accept()
 *             pool.submit(echo_client, client_sock, client_addr)
 *
 * The accepted socket travels to the pool as the task's input (its fd, as
 * bytes); each connection occupies one of the 128 worker threads while
 * it lasts.  The server listens on 127.0.0.1 on an ephemeral port.  Run
 * without arguments, the program also starts 5 client threads that send
 * three lines each and check the echo; the server stops after serving
 * them and shuts the pool down cleanly.  "serve N" only serves: it prints
 * "listening on 127.0.0.1:PORT" and stops after N connections (the tests
 * connect 50 clients at once that way).
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* echo_client(sock): the task; its input is the connection's fd. */
static int echo_client(const void *in, size_t len, conc_buf *out, void *ctx)
{
    (void)ctx;
    (void)out;
    int fd;
    memcpy(&fd, in, len < sizeof fd ? len : sizeof fd);
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        if (send_all(fd, buf, (size_t)n) != 0) {
            break;
        }
    }
    close(fd);
    return 0;
}

static int port;

/* A client: connects, sends three lines, expects each back unchanged. */
static void *client(void *arg)
{
    int id = (int)(long)arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        printf("client %d: cannot connect\n", id);
        return (void *)1;
    }
    long bad = 0;
    for (int line = 0; line < 3; line++) {
        char msg[64], got[64];
        int n = snprintf(msg, sizeof msg, "hello %d from client %d\n", line,
                         id);
        send_all(fd, msg, (size_t)n);
        int have = 0;
        while (have < n) {
            ssize_t r = recv(fd, got + have, (size_t)(n - have), 0);
            if (r <= 0) {
                break;
            }
            have += (int)r;
        }
        if (have != n || memcmp(got, msg, (size_t)n) != 0) {
            bad = 1;
        }
    }
    printf("client %d: %s\n", id, bad ? "WRONG ECHO" : "3 lines echoed");
    close(fd);
    return (void *)bad;
}

int main(int argc, char **argv)
{
    bool serve_only = argc > 2 && strcmp(argv[1], "serve") == 0;
    int nclients = serve_only ? atoi(argv[2]) : 5;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        perror("listen");
        return 1;
    }
    port = ntohs(a.sin_port);
    printf("listening on 127.0.0.1:%d\n", port);
    fflush(stdout);
    conc_pool *pool; /* ThreadPoolExecutor(128) */
    int err = conc_pool_new(&pool, &(conc_pool_opts){ .kind = CONC_THREADS,
                                                      .workers = 128 });
    if (err != 0) {
        fprintf(stderr, "pool: %s\n", conc_strerror(err));
        return 1;
    }
    conc_thread *clients[64];
    int nthreads = serve_only ? 0 : nclients;
    for (int i = 0; i < nthreads; i++) {
        conc_thread_new(&clients[i],
                        &(conc_thread_opts){ .target = client,
                                             .arg = (void *)(long)(i + 1) });
        conc_thread_start(clients[i]);
    }
    int served = 0, ok = 1;
    while (served < nclients) {
        struct pollfd pfd = { .fd = lfd, .events = POLLIN };
        int r = poll(&pfd, 1, 30000);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            fprintf(stderr, "no client came for 30 s\n");
            ok = 0;
            break;
        }
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            continue;
        }
        conc_future *f; /* pool.submit(echo_client, client_sock) */
        if (conc_pool_submit(pool, echo_client, &cfd, sizeof cfd, &f) != 0) {
            close(cfd);
            ok = 0;
            continue;
        }
        conc_future_free(f);
        served++;
    }
    close(lfd);
    for (int i = 0; i < nthreads; i++) {
        void *res = NULL;
        conc_thread_join(clients[i], CONC_FOREVER);
        conc_thread_result(clients[i], &res);
        ok &= res == NULL;
        conc_thread_free(clients[i]);
    }
    /* every connection handled to its end, then the pool stops */
    conc_pool_shutdown(pool, true, false);
    conc_pool_free(pool);
    printf("server stopped cleanly after %d connections\n", served);
    return ok ? 0 : 1;
}
