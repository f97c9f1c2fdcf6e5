/* Issue 12 ("Trust") for the gRPC layer: calls handed to other threads under a
 * storm of cancellations (point 1), servers that must not share a port (point 7),
 * slow handshakes and errors that name the hop that failed (point 8). Real servers
 * on real sockets in one process. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "meseta/alloc.h"
#include "meseta/test/v1/echo.pb-c.h"

#include "echo-service.h"
#include "testlib.h"

extern const unsigned char ms_test_descriptor_set[];
extern const size_t ms_test_descriptor_set_len;

typedef Meseta__Test__V1__EchoRequest req_t;
typedef Meseta__Test__V1__EchoReply reply_t;
#define REQ_INIT MESETA__TEST__V1__ECHO_REQUEST__INIT
#define REPLY_INIT MESETA__TEST__V1__ECHO_REPLY__INIT
#define REPLY_DESC (&meseta__test__v1__echo_reply__descriptor)
#define ECHO(m) "/meseta.test.v1.Echo/" m

static void free_msg(void *m) {
  protobuf_c_message_free_unpacked(m, NULL);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return (uint32_t)(*s >> 16);
}

/* ---- point 1: a server whose handlers hand every call to worker threads ------- */

typedef enum job_kind { JOB_UNARY, JOB_STREAM, JOB_BIDI_REPLY, JOB_BIDI_END } job_kind;

typedef struct job {
  job_kind kind;
  ms_rpc_call *call; /* the job holds a reference */
  uint32_t left;     /* JOB_STREAM: messages still to send */
  struct job *next;
} job;

typedef struct pool {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  job *head, *tail;
  bool stop;
  pthread_t threads[6];
  atomic_ulong jobs, sends_refused, done_ok, done_cancelled, drains;
} pool;

static pool P;

static void push(job *j) {
  pthread_mutex_lock(&P.mu);
  j->next = NULL;
  if (P.tail)
    P.tail->next = j;
  else
    P.head = j;
  P.tail = j;
  pthread_cond_signal(&P.cond);
  pthread_mutex_unlock(&P.mu);
}

static void hand_off(ms_rpc_call *call, job_kind kind, uint32_t left) {
  job *j = ms_xcalloc(1, sizeof(*j));
  j->kind = kind;
  j->call = call;
  j->left = left;
  ms_rpc_call_ref(call);
  push(j);
}

/* A few microseconds of busy work, or of taking the call's lock, before dropping a
 * reference, at random: the drops land anywhere in the server thread's handling of
 * the same call. */
static void spin(ms_rpc_call *call, uint64_t *seed) {
  if (rnd(seed) % 2) {
    for (volatile uint32_t i = 0, n = rnd(seed) % 2000; i < n; i++) {
    }
  } else {
    for (uint32_t i = 0, n = rnd(seed) % 64; i < n; i++)
      ms_rpc_call_is_done(call);
  }
}

/* Runs a job; false when it wants to run again (a stream with more to send). */
static bool run_job(job *j, uint64_t *seed) {
  reply_t r = REPLY_INIT;
  r.text = "w";
  switch (j->kind) {
  case JOB_UNARY:
    if (rnd(seed) % 4 == 0)
      ms_rpc_call_finish(j->call, MS_NOT_FOUND, "field `id`: no such thing");
    else
      ms_rpc_call_reply(j->call, &r.base, NULL);
    return true;
  case JOB_STREAM:
    for (int i = 0; i < 16 && j->left > 0; i++) {
      ms_error *err = NULL;
      if (ms_rpc_call_send(j->call, &r.base, &err) < 0) {
        bool over = err->code != MS_RESOURCE_EXHAUSTED;
        ms_error_free(err);
        atomic_fetch_add(&P.sends_refused, 1);
        if (over)
          return true;
        usleep(200); /* the queue is full: let the server thread send */
        break;
      }
      j->left--;
    }
    if (j->left == 0)
      ms_rpc_call_finish(j->call, MS_OK, NULL);
    return j->left == 0 || ms_rpc_call_is_done(j->call);
  case JOB_BIDI_REPLY:
    ms_rpc_call_send(j->call, &r.base, NULL);
    if (rnd(seed) % 8 == 0)
      ms_rpc_call_finish(j->call, MS_OK, NULL);
    return true;
  case JOB_BIDI_END:
    ms_rpc_call_finish(j->call, MS_OK, NULL);
    return true;
  }
  return true;
}

static void *worker(void *arg) {
  uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uintptr_t)arg;
  pthread_mutex_lock(&P.mu);
  for (;;) {
    while (!P.head && !P.stop)
      pthread_cond_wait(&P.cond, &P.mu);
    job *j = P.head;
    if (!j)
      break;
    P.head = j->next;
    if (!P.head)
      P.tail = NULL;
    pthread_mutex_unlock(&P.mu);
    atomic_fetch_add(&P.jobs, 1);
    if (run_job(j, &seed)) {
      /* Wait for the end of the call (as a forwarder does when it relays), then
       * drop the reference after a random while. */
      if (j->kind != JOB_UNARY)
        for (int64_t until = now_ms() + 1; !ms_rpc_call_is_done(j->call) && now_ms() < until;) {
        }
      spin(j->call, &seed);
      ms_rpc_call_unref(j->call);
      free(j);
    } else {
      push(j);
    }
    pthread_mutex_lock(&P.mu);
  }
  pthread_mutex_unlock(&P.mu);
  return NULL;
}

static int h_unary(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  hand_off(call, JOB_UNARY, 0);
  return 0;
}
static int h_stream(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  hand_off(call, JOB_STREAM, ((const req_t *)req)->count);
  return 0;
}
static void h_drain(ms_rpc_call *call) {
  atomic_fetch_add(&P.drains, 1);
}
static int h_bidi_start(ms_rpc_call *call, const ProtobufCMessage *req, ms_error **err) {
  return 0;
}
static int h_bidi_msg(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  hand_off(call, JOB_BIDI_REPLY, 0);
  return 0;
}
static int h_bidi_end(ms_rpc_call *call, ms_error **err) {
  hand_off(call, JOB_BIDI_END, 0);
  return 0;
}
static void h_done(ms_rpc_call *call, bool cancelled) {
  atomic_fetch_add(cancelled ? &P.done_cancelled : &P.done_ok, 1);
}

static ms_rpc_server *stress_server(ms_error **err) {
  static const ms_rpc_method methods[] = {
      {.name = "Unary", .on_start = h_unary, .on_done = h_done},
      {.name = "ServerStream", .on_start = h_stream, .on_drain = h_drain, .on_done = h_done},
      {.name = "Bidi",
       .on_start = h_bidi_start,
       .on_message = h_bidi_msg,
       .on_half_close = h_bidi_end,
       .on_done = h_done},
  };
  const char *addrs[] = {"127.0.0.1:0"};
  ms_rpc_server_options o = {.listen = addrs, .n_listen = 1, .max_queued_sends = 32};
  ms_rpc_server *srv = ms_rpc_server_new(&o, err);
  if (!srv)
    return NULL;
  if (ms_rpc_server_add_descriptors(srv, ms_test_descriptor_set, ms_test_descriptor_set_len, err) < 0 ||
      ms_rpc_server_add_service(srv, &meseta__test__v1__echo__descriptor, methods, MS_ARRAY_SIZE(methods),
                                NULL, err) < 0 ||
      ms_rpc_server_start(srv, err) < 0) {
    ms_rpc_server_free(srv);
    return NULL;
  }
  return srv;
}

typedef struct client {
  const char *target;
  int64_t until_ms;
  uint64_t seed;
  unsigned long calls, failed;
} client;

/* One client thread: unary calls with short deadlines, streams read in part then
 * cancelled, bidi streams cancelled mid-way; each on its own channel. */
static void *client_main(void *arg) {
  client *c = arg;
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(c->target, NULL, &err);
  if (!ch) {
    ms_error_free(err);
    c->failed++;
    return NULL;
  }
  req_t req = REQ_INIT;
  req.text = "x";
  ms_rpc_call_options so = {.timeout_ms = 20000}; /* no client waits forever, whatever happens */
  while (now_ms() < c->until_ms) {
    ProtobufCMessage *m = NULL;
    c->calls++;
    switch (rnd(&c->seed) % 8) {
    case 0: {
      ms_rpc_call_options o = {.timeout_ms = 1 + rnd(&c->seed) % 5};
      if (ms_rpc_unary(ch, ECHO("Unary"), &req.base, REPLY_DESC, &o, &m, &err) == 0)
        free_msg(m);
      break;
    }
    case 1:
    case 2:
    case 3:
    case 4:
    case 5: {
      /* Mostly cancelled while the server still sends: the riskiest end of a call. */
      req.count = 1 + rnd(&c->seed) % 2000;
      ms_rpc_stream *s = ms_rpc_stream_open(ch, ECHO("ServerStream"), &req.base, &so, &err);
      for (uint32_t i = 0, n = rnd(&c->seed) % 4; s && i < n; i++) {
        if (ms_rpc_stream_recv(s, REPLY_DESC, &m, &err) != 1)
          break;
        free_msg(m);
      }
      ms_rpc_stream_free(s); /* cancels what is left */
      break;
    }
    default: {
      ms_rpc_stream *s = ms_rpc_stream_open(ch, ECHO("Bidi"), NULL, &so, &err);
      uint32_t sent = 0;
      for (uint32_t n = rnd(&c->seed) % 6; s && sent < n; sent++)
        if (ms_rpc_stream_send(s, &req.base, &err) < 0)
          break;
      if (s && sent && rnd(&c->seed) % 2 && ms_rpc_stream_recv(s, REPLY_DESC, &m, &err) == 1)
        free_msg(m);
      if (s && rnd(&c->seed) % 2)
        ms_rpc_stream_close_send(s, &err);
      ms_rpc_stream_free(s);
      break;
    }
    }
    if (err)
      c->failed++;
    ms_error_free(TAKE_PTR(err));
  }
  ms_rpc_channel_free(ch);
  return NULL;
}

/* Point 1: the server thread and the threads that hold calls drop them at the
 * same moment, thousands of times, under ASan: no use after free, no double free,
 * and every call's on_done runs once. */
static void test_trust_1_handed_off_calls_under_cancellation(void) {
  ms_error *err = NULL;
  memset(&P, 0, sizeof(P));
  pthread_mutex_init(&P.mu, NULL);
  pthread_cond_init(&P.cond, NULL);
  for (size_t i = 0; i < MS_ARRAY_SIZE(P.threads); i++)
    pthread_create(&P.threads[i], NULL, worker, (void *)(i + 1));
  ms_rpc_server *srv = stress_server(&err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(srv);

  const char *secs = getenv("MESETA_TRUST_STRESS_SECONDS");
  int64_t seconds = secs ? strtol(secs, NULL, 10) : 10;
  client clients[8];
  pthread_t t[MS_ARRAY_SIZE(clients)];
  int64_t start = now_ms();
  for (size_t i = 0; i < MS_ARRAY_SIZE(clients); i++) {
    clients[i] = (client){.target = ms_rpc_server_address(srv, 0),
                          .until_ms = start + seconds * 1000,
                          .seed = 0x2545f4914f6cdd1dULL * (i + 1)};
    pthread_create(&t[i], NULL, client_main, &clients[i]);
  }
  unsigned long calls = 0, failed = 0;
  for (size_t i = 0; i < MS_ARRAY_SIZE(clients); i++) {
    pthread_join(t[i], NULL);
    calls += clients[i].calls;
    failed += clients[i].failed;
  }
  /* Every call ends once (on_done) before the server goes; then the workers. */
  ms_rpc_server_shutdown(srv, 5000);
  ms_rpc_server_free(srv);
  pthread_mutex_lock(&P.mu);
  P.stop = true;
  pthread_cond_broadcast(&P.cond);
  pthread_mutex_unlock(&P.mu);
  for (size_t i = 0; i < MS_ARRAY_SIZE(P.threads); i++)
    pthread_join(P.threads[i], NULL);
  unsigned long ended = atomic_load(&P.done_ok) + atomic_load(&P.done_cancelled);
  printf("\n  %lu calls in %.1f s (%lu failed or cancelled by the client), %lu jobs, %lu calls ended "
         "(%lu cancelled), %lu refused sends, %lu drains\n",
         calls, (now_ms() - start) / 1000.0, failed, atomic_load(&P.jobs), ended,
         atomic_load(&P.done_cancelled), atomic_load(&P.sends_refused), atomic_load(&P.drains));
  CU_ASSERT_TRUE(calls > 0);
  CU_ASSERT_TRUE(ended > 0 && ended <= calls);
  pthread_mutex_destroy(&P.mu);
  pthread_cond_destroy(&P.cond);
}

/* ---- point 7: no two servers on one port -------------------------------------- */

static ms_rpc_server *echo_server(const char *listen, bool reuse_port, ms_error **err) {
  const char *addrs[] = {listen};
  ms_rpc_server_options o = {.listen = addrs, .n_listen = 1, .reuse_port = reuse_port};
  ms_rpc_server *srv = ms_rpc_server_new(&o, err);
  if (srv && (echo_service_add(srv, err) < 0 || ms_rpc_server_start(srv, err) < 0)) {
    ms_rpc_server_free(srv);
    return NULL;
  }
  return srv;
}

static bool echo_answers(const char *target) {
  ms_error *err = NULL;
  ms_rpc_channel *ch = ms_rpc_channel_new(target, NULL, &err);
  req_t req = REQ_INIT;
  req.text = "still here";
  ProtobufCMessage *m = NULL;
  ms_rpc_call_options o = {.timeout_ms = 10000, .wait_for_ready = true};
  bool ok = ch && ms_rpc_unary(ch, ECHO("Unary"), &req.base, REPLY_DESC, &o, &m, &err) == 0;
  if (ok)
    ok = strcmp(((reply_t *)m)->text, "still here") == 0;
  else
    fprintf(stderr, "`%s` did not answer: %s\n", target, err ? err->msg : "?");
  if (m)
    free_msg(m);
  ms_error_free(err);
  ms_rpc_channel_free(ch);
  return ok;
}

/* A second server on the port (or unix socket) of a first fails, naming the address
 * and why; the first keeps serving. Sharing is only on request. */
static void test_trust_7_port_in_use_is_refused(void) {
  ms_error *err = NULL;
  ms_rpc_server *first = echo_server("127.0.0.1:0", false, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(first);
  const char *addr = ms_rpc_server_address(first, 0);
  ms_rpc_server *second = echo_server(addr, false, &err);
  CU_ASSERT_PTR_NULL(second);
  CU_ASSERT_PTR_NOT_NULL_FATAL(err);
  printf("\n  %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, addr));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, "in use"));
  CU_ASSERT_EQUAL(err->errnum, EADDRINUSE);
  ms_error_free(TAKE_PTR(err));
  ms_rpc_server_free(second);
  /* The wildcard address conflicts with it as well. */
  _cleanup_free_ char *any = ms_xasprintf("0.0.0.0%s", strrchr(addr, ':'));
  second = echo_server(any, false, &err);
  CU_ASSERT_PTR_NULL(second);
  CU_ASSERT_TRUE(err && strstr(err->msg, any) && strstr(err->msg, "in use"));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_server_free(second);
  CU_ASSERT_TRUE(echo_answers(addr));
  ms_rpc_server_free(first);

  _cleanup_free_ char *dir = ms_test_tmpdir("meseta-rpc-trust");
  _cleanup_free_ char *sock = ms_xasprintf("unix:%s/s.sock", dir);
  first = echo_server(sock, false, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(first);
  second = echo_server(sock, false, &err);
  CU_ASSERT_PTR_NULL(second);
  CU_ASSERT_TRUE(err && strstr(err->msg, sock) && strstr(err->msg, "in use"));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_server_free(second);
  CU_ASSERT_TRUE(echo_answers(sock));
  ms_rpc_server_free(first);
  /* A stale socket file (its server gone) is no obstacle. */
  first = echo_server(sock, false, &err);
  CU_ASSERT_PTR_NOT_NULL(first);
  ms_rpc_server_free(first);
  ms_test_rmtree(dir);

  /* Asked for by both, the port is shared. */
  first = echo_server("127.0.0.1:0", true, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(first);
  second = echo_server(ms_rpc_server_address(first, 0), true, &err);
  CU_ASSERT_PTR_NOT_NULL(second);
  ms_rpc_server_free(second);
  ms_rpc_server_free(first);
}

/* ---- point 8: slow handshakes; errors that name the hop ------------------------ */

/* A TCP proxy that holds back what the server sends for delay_ms after each
 * connection opens (a slow TLS or HTTP/2 handshake, as seen by the client). */
typedef struct proxy {
  int lfd, wake[2];
  uint16_t port, upstream;
  int delay_ms;
  pthread_t thread;
  int cfd[16], ufd[16];
  int64_t release_ms[16];
  size_t n;
  unsigned long accepted;
} proxy;

static int listen_local(uint16_t *ret_port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  *ret_port = ntohs(sa.sin_port);
  return fd;
}

static void proxy_drop(proxy *p, size_t i) {
  close(p->cfd[i]);
  close(p->ufd[i]);
  p->n--;
  p->cfd[i] = p->cfd[p->n];
  p->ufd[i] = p->ufd[p->n];
  p->release_ms[i] = p->release_ms[p->n];
}

/* Copies what is readable on `from` to `to`; false at the end or on an error. */
static bool relay(int from, int to) {
  char buf[16384];
  ssize_t r = read(from, buf, sizeof(buf));
  for (ssize_t off = 0; r > 0 && off < r;) {
    ssize_t w = write(to, buf + off, (size_t)(r - off));
    if (w <= 0)
      return false;
    off += w;
  }
  return r > 0;
}

static void *proxy_main(void *arg) {
  proxy *p = arg;
  for (;;) {
    struct pollfd fds[2 + 2 * 16];
    size_t nf = 0;
    fds[nf++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
    fds[nf++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
    int64_t now = now_ms(), timeout = -1;
    for (size_t i = 0; i < p->n; i++) {
      bool held = now < p->release_ms[i];
      fds[nf++] = (struct pollfd){.fd = p->cfd[i], .events = POLLIN};
      fds[nf++] = (struct pollfd){.fd = p->ufd[i], .events = held ? 0 : POLLIN};
      if (held && (timeout < 0 || p->release_ms[i] - now < timeout))
        timeout = p->release_ms[i] - now;
    }
    if (poll(fds, nf, (int)timeout) < 0 && errno != EINTR)
      break;
    if (fds[0].revents)
      break;
    for (size_t i = p->n; i-- > 0;) {
      struct pollfd *c = &fds[2 + 2 * i], *u = &fds[3 + 2 * i];
      bool ok = true;
      if (c->revents)
        ok = relay(p->cfd[i], p->ufd[i]);
      if (ok && u->revents)
        ok = relay(p->ufd[i], p->cfd[i]);
      if (!ok)
        proxy_drop(p, i);
    }
    if (fds[1].revents & POLLIN) {
      int c = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
      int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      struct sockaddr_in sa = {
          .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(p->upstream)};
      if (c >= 0 && u >= 0 && p->n < 16 && connect(u, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        p->cfd[p->n] = c;
        p->ufd[p->n] = u;
        p->release_ms[p->n++] = now_ms() + p->delay_ms;
        p->accepted++;
      } else {
        if (c >= 0)
          close(c);
        if (u >= 0)
          close(u);
      }
    }
  }
  return NULL;
}

static bool proxy_start(proxy *p, uint16_t upstream, int delay_ms) {
  memset(p, 0, sizeof(*p));
  p->upstream = upstream;
  p->delay_ms = delay_ms;
  if ((p->lfd = listen_local(&p->port)) < 0 || pipe2(p->wake, O_CLOEXEC) < 0)
    return false;
  return pthread_create(&p->thread, NULL, proxy_main, p) == 0;
}

static void proxy_stop(proxy *p) {
  (void)!write(p->wake[1], "x", 1);
  pthread_join(p->thread, NULL);
  while (p->n)
    proxy_drop(p, 0);
  close(p->lfd);
  close(p->wake[0]);
  close(p->wake[1]);
}

static uint16_t port_of(const char *addr) {
  return (uint16_t)strtoul(strrchr(addr, ':') + 1, NULL, 10);
}

/* A server whose first bytes take a second to arrive (a slow handshake) is still
 * reached by a plain call: no wait-for-ready, nothing but the call's deadline. */
static void test_trust_8_slow_handshake(void) {
  ms_error *err = NULL;
  ms_rpc_server *srv = echo_server("127.0.0.1:0", false, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
  proxy p;
  CU_ASSERT_TRUE_FATAL(proxy_start(&p, port_of(ms_rpc_server_address(srv, 0)), 1000));
  _cleanup_free_ char *target = ms_xasprintf("127.0.0.1:%u", p.port);
  ms_rpc_channel *ch = ms_rpc_channel_new(target, NULL, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
  req_t req = REQ_INIT;
  req.text = "slow";
  ProtobufCMessage *m = NULL;
  ms_rpc_call_options o = {.timeout_ms = 15000};
  int64_t t0 = now_ms();
  int rc = ms_rpc_unary(ch, ECHO("Unary"), &req.base, REPLY_DESC, &o, &m, &err);
  printf("\n  through a proxy holding the server's first bytes 1 s: %s after %lld ms, %lu connection(s)\n",
         rc == 0 ? "answered" : err->msg, (long long)(now_ms() - t0), p.accepted);
  CU_ASSERT_EQUAL(rc, 0);
  if (m)
    free_msg(m);
  ms_error_free(err);
  ms_rpc_channel_free(ch);
  proxy_stop(&p);
  ms_rpc_server_free(srv);
}

/* A port nothing listens on (bound, then closed). */
static uint16_t dead_port(void) {
  uint16_t port = 0;
  int fd = listen_local(&port);
  if (fd >= 0)
    close(fd);
  return port;
}

/* Relays Unary to the target in the request's `text`, answering with its error:
 * what a master-api does with the allocator (blocking here is fine in a test). */
static int h_relay(ms_rpc_call *call, const ProtobufCMessage *msg, ms_error **err) {
  const req_t *req = (const req_t *)msg;
  ms_rpc_channel *ch = ms_rpc_channel_new(req->text, NULL, err);
  if (!ch)
    return MS_ERR;
  req_t down = REQ_INIT;
  ProtobufCMessage *m = NULL;
  ms_rpc_call_options o = {.timeout_ms = 5000};
  int rc = ms_rpc_unary(ch, ECHO("Unary"), &down.base, REPLY_DESC, &o, &m, err);
  ms_rpc_channel_free(ch);
  if (rc < 0)
    return MS_ERR;
  free_msg(m);
  reply_t r = REPLY_INIT;
  return ms_rpc_call_reply(call, &r.base, err);
}

static void test_trust_8_errors_name_the_hop(void) {
  ms_error *err = NULL;
  ms_rpc_server *srv = echo_server("127.0.0.1:0", false, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
  const char *target = ms_rpc_server_address(srv, 0);
  ms_rpc_channel *ch = ms_rpc_channel_new(target, NULL, &err);
  ProtobufCMessage *m = NULL;
  ms_rpc_call_options o = {.timeout_ms = 5000};

  /* Statuses the far server sent keep its message exactly. */
  req_t req = REQ_INIT;
  req.code = MS_UNAVAILABLE;
  req.message = "field `agent_id`: agent `a-1` is unreachable";
  CU_ASSERT_EQUAL(ms_rpc_unary(ch, ECHO("Fail"), &req.base, REPLY_DESC, &o, &m, &err), MS_ERR);
  CU_ASSERT_TRUE(err && err->code == MS_UNAVAILABLE && strcmp(err->msg, req.message) == 0);
  ms_error_free(TAKE_PTR(err));
  req.code = MS_DEADLINE_EXCEEDED;
  req.message = "registry: etcd did not answer";
  CU_ASSERT_EQUAL(ms_rpc_unary(ch, ECHO("Fail"), &req.base, REPLY_DESC, &o, &m, &err), MS_ERR);
  CU_ASSERT_TRUE(err && err->code == MS_DEADLINE_EXCEEDED && strcmp(err->msg, req.message) == 0);
  ms_error_free(TAKE_PTR(err));

  /* No answer before the deadline: this hop's target and method. */
  req_t slow = REQ_INIT;
  slow.delay_ms = 10000;
  ms_rpc_call_options quick = {.timeout_ms = 200};
  CU_ASSERT_EQUAL(ms_rpc_unary(ch, ECHO("Sleep"), &slow.base, REPLY_DESC, &quick, &m, &err), MS_ERR);
  CU_ASSERT_FATAL(err != NULL);
  printf("\n  %s\n", err->msg);
  CU_ASSERT_EQUAL(err->code, MS_DEADLINE_EXCEEDED);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, target));
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, ECHO("Sleep")));
  ms_error_free(TAKE_PTR(err));

  /* Nothing listens: unary and stream name the target. */
  _cleanup_free_ char *dead = ms_xasprintf("127.0.0.1:%u", dead_port());
  _cleanup_free_ char *quoted = ms_xasprintf("`%s`", dead);
  ms_rpc_channel *nowhere = ms_rpc_channel_new(dead, NULL, &err);
  CU_ASSERT_EQUAL(ms_rpc_unary(nowhere, ECHO("Unary"), &req.base, REPLY_DESC, &o, &m, &err), MS_ERR);
  CU_ASSERT_FATAL(err != NULL);
  printf("  %s\n", err->msg);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, quoted));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_stream *s = ms_rpc_stream_open(nowhere, ECHO("ServerStream"), &req.base, &o, &err);
  if (s) /* the failure may show only at the first read */
    CU_ASSERT_EQUAL(ms_rpc_stream_recv(s, REPLY_DESC, &m, &err), MS_ERR);
  CU_ASSERT_FATAL(err != NULL);
  printf("  stream: %s\n", err->msg);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, quoted));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_stream_free(s);
  ms_rpc_channel_free(nowhere);

  /* Relayed through a server, the error still says which hop failed. */
  static const ms_rpc_method relay_methods[] = {{.name = "Unary", .on_start = h_relay}};
  const char *addrs[] = {"127.0.0.1:0"};
  ms_rpc_server_options so = {.listen = addrs, .n_listen = 1};
  ms_rpc_server *relay_srv = ms_rpc_server_new(&so, &err);
  CU_ASSERT_PTR_NOT_NULL_FATAL(relay_srv);
  MS_ASSERT_OK(
      ms_rpc_server_add_descriptors(relay_srv, ms_test_descriptor_set, ms_test_descriptor_set_len, &err),
      &err);
  MS_ASSERT_OK(
      ms_rpc_server_add_service(relay_srv, &meseta__test__v1__echo__descriptor, relay_methods, 1, NULL, &err),
      &err);
  MS_ASSERT_OK(ms_rpc_server_start(relay_srv, &err), &err);
  ms_rpc_channel *via = ms_rpc_channel_new(ms_rpc_server_address(relay_srv, 0), NULL, &err);
  req_t r = REQ_INIT;
  r.text = dead;
  CU_ASSERT_EQUAL(ms_rpc_unary(via, ECHO("Unary"), &r.base, REPLY_DESC, &o, &m, &err), MS_ERR);
  CU_ASSERT_FATAL(err != NULL);
  printf("  relayed: %s\n", err->msg);
  CU_ASSERT_EQUAL(err->code, MS_UNAVAILABLE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err->msg, quoted));
  CU_ASSERT_PTR_NULL(strstr(err->msg, ms_rpc_server_address(relay_srv, 0)));
  ms_error_free(TAKE_PTR(err));
  ms_rpc_channel_free(via);
  ms_rpc_server_free(relay_srv);

  ms_rpc_channel_free(ch);
  ms_rpc_server_free(srv);
}

int main(int argc, char **argv) {
  static const ms_test_case cases[] = {
      {"trust_1_handed_off_calls_under_cancellation", test_trust_1_handed_off_calls_under_cancellation},
      {"trust_7_port_in_use_is_refused", test_trust_7_port_in_use_is_refused},
      {"trust_8_slow_handshake", test_trust_8_slow_handshake},
      {"trust_8_errors_name_the_hop", test_trust_8_errors_name_the_hop},
      {NULL, NULL},
  };
  return ms_test_main(argc, argv, "rpc-trust", cases);
}
