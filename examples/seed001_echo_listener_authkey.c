/* seed001_echo_listener_authkey.c - seed 001's echo server once more, with
 * multiprocessing.connection instead of a raw socket: a Listener that
 * only talks to clients holding the key, and Clients in other processes.
 *
 *     with Listener(("127.0.0.1", 0), authkey=b"secret") as listener:
 *         while served < 3:
 *             with listener.accept() as conn:     # challenge, then talk
 *                 while (data := conn.recv_bytes()) != b"bye":
 *                     conn.send_bytes(data.upper())
 *
 *     conn = Client(address, authkey=b"secret")
 *     conn.send_bytes(b"hello"); conn.recv_bytes()   # b"HELLO"
 *
 * The server listens on an ephemeral port; three client processes connect
 * with the key and each has two lines echoed upper-cased; a fourth comes
 * with the wrong key and is refused (CONC_EAUTH on its side; the server
 * counts the refusal and goes on).  Python's own Client and Listener
 * speak the same protocol, so either side could be Python.
 */
#include <conc.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define KEY "secret"
enum { CLIENTS = 3 };

static char address[128];

static int client(void *arg)
{
    int id = (int)(intptr_t)arg;
    conc_conn *c = NULL;
    int err = conc_client_connect(&c, address, &(conc_client_opts){
                                                   .authkey = KEY,
                                                   .authkey_len = 6 });
    if (err != 0) {
        printf("client %d: connect: %s\n", id, conc_errdetail());
        return 1;
    }
    const char *lines[] = { "hello", "from a client" };
    for (int i = 0; i < 2 && err == 0; i++) {
        conc_msg m = { 0 };
        err = conc_conn_send(c, lines[i], strlen(lines[i]));
        if (err == 0) {
            err = conc_conn_recv(c, &m, 10.0);
        }
        if (err == 0) {
            printf("client %d sent '%s', got '%.*s'\n", id, lines[i],
                   (int)m.len, (char *)m.data);
        }
        conc_msg_free(&m);
    }
    if (err == 0) {
        err = conc_conn_send(c, "bye", 3);
    }
    conc_conn_free(c);
    return err == 0 ? 0 : 1;
}

static int intruder(void *arg)
{
    (void)arg;
    conc_conn *c = NULL;
    int err = conc_client_connect(&c, address, &(conc_client_opts){
                                                   .authkey = "guess",
                                                   .authkey_len = 5 });
    printf("a client with the wrong key: %s\n", conc_errname(err));
    conc_conn_free(c);
    return err == CONC_EAUTH ? 0 : 1;
}

/* Echoes one connection, upper-cased, until "bye". */
static int talk(conc_conn *c)
{
    for (;;) {
        conc_msg m = { 0 };
        int err = conc_conn_recv(c, &m, 10.0);
        if (err != 0) {
            return err;
        }
        if (m.len == 3 && memcmp(m.data, "bye", 3) == 0) {
            conc_msg_free(&m);
            return 0;
        }
        for (size_t i = 0; i < m.len; i++) {
            char *p = (char *)m.data + i;
            *p = (char)toupper((unsigned char)*p);
        }
        err = conc_conn_send(c, m.data, m.len);
        conc_msg_free(&m);
        if (err != 0) {
            return err;
        }
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    conc_listener *l = NULL;
    conc_process *ps[CLIENTS + 1] = { NULL };
    int served = 0, refused = 0, err;
    err = conc_listener_new(&l, "tcp:127.0.0.1:0", &(conc_listener_opts){
                                                       .authkey = KEY,
                                                       .authkey_len = 6 });
    if (err != 0) {
        printf("listener: %s\n", conc_errdetail());
        return 1;
    }
    snprintf(address, sizeof address, "%s", conc_listener_address(l));
    printf("listening on %s, with a key\n", address);
    for (int i = 0; i <= CLIENTS && err == 0; i++) {
        err = conc_process_new(&ps[i], &(conc_process_opts){
                                           .target = i < CLIENTS ? client
                                                                 : intruder,
                                           .arg = (void *)(intptr_t)(i + 1) });
        if (err == 0) {
            err = conc_process_start(ps[i]);
        }
    }
    /* Until every client is served and the intruder turned away (it
     * waits for our challenge until we accept it). */
    while (err == 0 && (served < CLIENTS || refused < 1)) {
        conc_conn *c = NULL;
        int e = conc_listener_accept(l, &c, 30.0);
        if (e == CONC_EAUTH) {
            refused++; /* the intruder: its connection is closed */
            continue;
        }
        err = e == 0 ? talk(c) : e;
        conc_conn_free(c);
        served += err == 0;
    }
    bool ok = err == 0;
    for (int i = 0; i <= CLIENTS; i++) {
        int code = -1;
        ok = ok && conc_process_join(ps[i], 30.0) == 0 &&
             conc_process_exitcode(ps[i], &code) == 0 && code == 0;
        conc_process_free(ps[i]);
    }
    conc_listener_free(l);
    printf("served %d clients, refused %d\n", served, refused);
    ok = ok && served == CLIENTS && refused == 1;
    printf("%s\n", ok ? "OK: every client echoed, the wrong key refused"
                      : "FAILED");
    return ok ? 0 : 1;
}
