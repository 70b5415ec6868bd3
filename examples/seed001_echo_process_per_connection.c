/* seed001_echo_process_per_connection.c - seed 001's server that starts a
 * process per connection, each talking to its client until it hangs up.
 *
 *     def talk(conn):
 *         while True:
 *             data = conn.recv(1024)
 *             if not data: break
 *             conn.send(data.upper())
 *         conn.close()
 *
 *     def server(ip, port):
 *         server = socket(AF_INET, SOCK_STREAM); server.bind((ip, port))
 *         server.listen(5)
 *         while True:
 *             conn, addr = server.accept()   # the main process only accepts
 *             p = Process(target=talk, args=(conn,))
 *             p.start()
 *
 * A forked child inherits the accepted socket, so conc_process's arg can
 * simply point at the fd; the parent closes its copy right after start.
 * The server listens on 127.0.0.1 on an ephemeral port; run without
 * arguments, the program also starts a client process whose 5 threads
 * connect, send three lines each and expect them back upper-cased, then
 * the server joins every child (no zombies) and stops.  (The clients live
 * in a process of their own: a connection's talk() child, forked from
 * the server, would otherwise inherit the client ends of the sockets and
 * keep them open after the clients closed them, so no talk() would ever
 * see its client hang up.)  "serve N" only serves: it prints
 * "listening on 127.0.0.1:PORT" and stops after N connections.
 */
#define _POSIX_C_SOURCE 200809L

#include <conc.h>

#include <arpa/inet.h>
#include <ctype.h>
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

/* talk(conn): runs in the child process. */
static int talk(void *arg)
{
    int fd = *(int *)arg;
    char buf[1024];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        for (ssize_t i = 0; i < n; i++) {
            buf[i] = (char)toupper((unsigned char)buf[i]);
        }
        if (send_all(fd, buf, (size_t)n) != 0) {
            break;
        }
    }
    close(fd);
    return 0;
}

static int port;

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
        char msg[64], want[64], got[64];
        int n = snprintf(msg, sizeof msg, "hello %d from client %d\n", line,
                         id);
        for (int i = 0; i < n; i++) {
            want[i] = (char)toupper((unsigned char)msg[i]);
        }
        send_all(fd, msg, (size_t)n);
        int have = 0;
        while (have < n) {
            ssize_t r = recv(fd, got + have, (size_t)(n - have), 0);
            if (r <= 0) {
                break;
            }
            have += (int)r;
        }
        if (have != n || memcmp(got, want, (size_t)n) != 0) {
            bad = 1;
        } else if (line == 0) {
            printf("client %d got: %.*s", id, have, got);
        }
    }
    printf("client %d: %s\n", id, bad ? "WRONG REPLY" : "3 lines upper-cased");
    close(fd);
    return (void *)bad;
}

/* The client process: n client threads at once. */
static int run_clients(void *arg)
{
    int n = *(int *)arg;
    conc_thread *clients[64];
    int ok = 1;
    for (int i = 0; i < n && i < 64; i++) {
        conc_thread_new(&clients[i],
                        &(conc_thread_opts){ .target = client,
                                             .arg = (void *)(long)(i + 1) });
        conc_thread_start(clients[i]);
    }
    for (int i = 0; i < n && i < 64; i++) {
        void *res = NULL;
        conc_thread_join(clients[i], CONC_FOREVER);
        conc_thread_result(clients[i], &res);
        ok &= res == NULL;
        conc_thread_free(clients[i]);
    }
    fflush(stdout);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    bool serve_only = argc > 2 && strcmp(argv[1], "serve") == 0;
    int nclients = serve_only ? atoi(argv[2]) : 5;
    if (nclients < 0 || nclients > 1000) {
        return 2;
    }
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
    conc_process *driver = NULL;
    if (!serve_only) {
        conc_process_new(&driver, &(conc_process_opts){ .target = run_clients,
                                                        .arg = &nclients,
                                                        .name = "clients" });
        if (conc_process_start(driver) != 0) {
            fprintf(stderr, "cannot start the clients\n");
            return 1;
        }
    }
    conc_process **procs = calloc((size_t)nclients + 1, sizeof *procs);
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
        int conn = accept(lfd, NULL, NULL);
        if (conn < 0) {
            continue;
        }
        /* p = Process(target=talk, args=(conn,)); p.start() */
        conc_process *p;
        int err = conc_process_new(&p, &(conc_process_opts){ .target = talk,
                                                             .arg = &conn });
        if (err == 0) {
            err = conc_process_start(p);
        }
        close(conn); /* the child has its own copy */
        if (err != 0) {
            fprintf(stderr, "start: %s\n", conc_strerror(err));
            conc_process_free(p);
            ok = 0;
            break;
        }
        procs[served++] = p;
    }
    close(lfd);
    if (driver != NULL) {
        int code = -1;
        conc_process_join(driver, 60.0);
        conc_process_exitcode(driver, &code);
        ok &= code == 0;
        conc_process_free(driver);
    }
    for (int i = 0; i < served; i++) {
        int code = -1;
        conc_process_join(procs[i], 30.0);
        conc_process_exitcode(procs[i], &code);
        ok &= code == 0;
        conc_process_free(procs[i]);
    }
    free(procs);
    printf("server stopped cleanly after %d connections, %d processes "
           "joined\n",
           served, served);
    return ok ? 0 : 1;
}
