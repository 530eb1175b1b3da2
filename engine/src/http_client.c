/* HTTP client: libcurl's multi-socket API driven by the engine's libuv loop (one multi handle per Lua state,
 * so connections are reused across requests).
 *
 * core.http_request(opts, on_done) -> request | nil, msg, code
 *   opts.url (required), method (default GET, POST with a body), headers (list of "Name: value"), body (a
 *   string, sent as is), timeout_ms (whole request), connect_timeout_ms, cainfo (CA file for https),
 *   max_body (bytes kept when there is no on_data, default 16 MiB), on_headers(status, headers) (once, before
 *   the first data), on_data(chunk) (the body as it arrives; then result.body is nil)
 *   on_done(result) once: {status, headers = {lowercase name = value}, body} or {error = message, code}
 * request:abort()   stop it; on_done is not called
 * core.http_close_idle() -> true when the client had no request in flight and closed its cached connections
 *   (a fresh client starts with the next request), false otherwise
 *
 * curl runs its callbacks only inside curl_multi_socket_action, which this file calls from libuv callbacks.
 * Those callbacks only queue (data, completion); the queue reaches Lua after socket_action returned, so Lua
 * never runs inside curl and may start or abort requests from any callback it gets.
 *
 * curl's timeouts (often 0 ms: "act now") never run socket_action from a uv timer: a timer due when an
 * iteration starts fires before the loop polls, and a request completed there would leave a UV_RUN_ONCE
 * caller (a blocking call outside a task) asleep in the poll that follows. They kick a check handle instead,
 * with an idle handle keeping that poll from blocking, so the work runs right after the poll.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "internal.h"

#define MULTI_KEY "ferry.http_multi"
#define MULTI_MT "ferry.http_multi_mt"
#define REQ_MT "ferry.http_request"
#define DEFAULT_MAX_BODY (16 * 1024 * 1024)
#define RECV_BUFFER (64 * 1024)
#define DELIVER_SLICE (64 * 1024)

typedef struct bytes {
  char *data;
  size_t len, cap;
} bytes;

typedef struct http_req http_req;

typedef struct http_multi {
  CURLM *multi;
  uv_loop_t *loop;
  uv_timer_t timer;
  uv_idle_t idle;   /* active while a kick is pending: the poll does not block */
  uv_check_t check; /* runs the kicked socket_action after the poll */
  int kicked, closing_handles;
  lua_State *L; /* main thread */
  http_req *live;                 /* every request not yet freed */
  http_req *queue_head, *queue_tail; /* requests with something to deliver to Lua */
  int inflight; /* requests added and not freed: while there are some, the timer keeps the loop alive */
  int closing;
} http_multi;

typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  http_multi *m;
} sock_ctx;

struct http_req {
  CURL *easy;
  http_multi *m;
  struct curl_slist *headers;
  int body_ref, on_data_ref, on_headers_ref, on_done_ref;
  bytes data;    /* received, not yet delivered (with on_data) or the whole body (without) */
  bytes header;  /* raw header lines of the last response */
  size_t max_body;
  int too_big, headers_delivered, done, queued, aborted, delivering, counted;
  CURLcode result;
  http_req *next_queued;
  http_req *next_live, **prev_live;
  http_req **owner; /* the Lua handle's pointer, cleared when the struct is freed */
  char errbuf[CURL_ERROR_SIZE];
};

static int append(bytes *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + n) cap *= 2;
    char *nd = realloc(b->data, cap);
    if (!nd) return -1;
    b->data = nd;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static void req_free(http_req *r) {
  lua_State *L = r->m->L;
  if (r->easy) {
    curl_multi_remove_handle(r->m->multi, r->easy);
    curl_easy_cleanup(r->easy);
  }
  curl_slist_free_all(r->headers);
  if (!r->m->closing) {
    ferry_unref(L, &r->body_ref);
    ferry_unref(L, &r->on_data_ref);
    ferry_unref(L, &r->on_headers_ref);
    ferry_unref(L, &r->on_done_ref);
  }
  if (r->owner) *r->owner = NULL;
  if (r->counted && --r->m->inflight == 0 && !r->m->closing) uv_unref((uv_handle_t *)&r->m->timer);
  if (r->prev_live) {
    *r->prev_live = r->next_live;
    if (r->next_live) r->next_live->prev_live = r->prev_live;
  }
  free(r->data.data);
  free(r->header.data);
  free(r);
}

static void enqueue(http_req *r) {
  if (r->queued) return;
  r->queued = 1;
  r->next_queued = NULL;
  if (r->m->queue_tail)
    r->m->queue_tail->next_queued = r;
  else
    r->m->queue_head = r;
  r->m->queue_tail = r;
}

/* ---- curl callbacks: they only record and queue ---- */

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
  http_req *r = ud;
  size_t len = size * n;
  if (r->on_data_ref == LUA_NOREF && r->data.len + len > r->max_body) {
    r->too_big = 1;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (append(&r->data, p, len) != 0) return 0;
  if (r->on_data_ref != LUA_NOREF) enqueue(r);
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  http_req *r = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) r->header.len = 0; /* a new response (after 100 Continue) */
  if (r->header.len + len > 65536) return 0;
  return append(&r->header, p, len) == 0 ? len : 0;
}

static void sock_close_cb(uv_handle_t *h) { free(h->data); }

static void on_poll(uv_poll_t *p, int status, int events);

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)e;
  http_multi *m = userp;
  sock_ctx *sc = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (sc) {
      uv_poll_stop(&sc->poll);
      uv_close((uv_handle_t *)&sc->poll, sock_close_cb);
      curl_multi_assign(m->multi, s, NULL);
    }
    return 0;
  }
  if (!sc) {
    sc = calloc(1, sizeof *sc);
    if (!sc) return -1;
    if (uv_poll_init_socket(m->loop, &sc->poll, s) != 0) {
      free(sc);
      return -1;
    }
    sc->poll.data = sc;
    sc->fd = s;
    sc->m = m;
    curl_multi_assign(m->multi, s, sc);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&sc->poll, events, on_poll);
  return 0;
}

static void on_timeout(uv_timer_t *t);
static void kick(http_multi *m);

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  http_multi *m = userp;
  if (timeout_ms < 0)
    uv_timer_stop(&m->timer);
  else if (timeout_ms == 0) /* never call curl from here: the kick runs socket_action after the next poll */
    kick(m);
  else
    uv_timer_start(&m->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- delivery to Lua, outside curl ---- */

static void push_headers(lua_State *L, const bytes *h) {
  lua_newtable(L);
  const char *p = h->data, *end = h->data + h->len;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon && colon > p) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *c = p; c < colon; c++) luaL_addchar(&b, (char)tolower((unsigned char)*c));
      luaL_pushresult(&b);
      const char *v = colon + 1, *ve = line_end;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_rawset(L, -3);
    }
    p = eol ? eol + 1 : end;
  }
}

static const char *error_code(CURLcode rc) {
  switch (rc) {
  case CURLE_COULDNT_CONNECT: return "ECONNREFUSED";
  case CURLE_COULDNT_RESOLVE_HOST: return "ENOTFOUND";
  case CURLE_OPERATION_TIMEDOUT: return "ETIMEDOUT";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM: return "ETLS";
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE: return "ECONNRESET";
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL: return "EINVAL";
  default: return "EIO";
  }
}

static long response_status(http_req *r) {
  long status = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

/* One queued request: its headers (once), its data, then its result when done. */
static void deliver(http_multi *m, http_req *r) {
  lua_State *L = ferry_loop_thread(m->L);
  if (r->aborted) {
    req_free(r);
    return;
  }
  r->delivering = 1;
  long status = response_status(r);
  if (!r->headers_delivered && status > 0 && (r->data.len > 0 || r->done)) {
    r->headers_delivered = 1;
    if (r->on_headers_ref != LUA_NOREF) {
      lua_pushinteger(L, status);
      push_headers(L, &r->header);
      ferry_loop_call(L, r->on_headers_ref, 2);
    }
  }
  /* in slices of at most DELIVER_SLICE: one socket_action can read megabytes, and strings of one size keep
   * the consumer's heap from fragmenting */
  for (size_t at = 0; !r->aborted && r->on_data_ref != LUA_NOREF && at < r->data.len;) {
    size_t n = r->data.len - at < DELIVER_SLICE ? r->data.len - at : DELIVER_SLICE;
    lua_pushlstring(L, r->data.data + at, n);
    at += n;
    if (at == r->data.len) r->data.len = 0;
    ferry_loop_call(L, r->on_data_ref, 1);
  }
  if (r->aborted) r->data.len = 0;
  r->delivering = 0;
  if (r->aborted || !r->done) {
    if (r->aborted) req_free(r);
    return;
  }
  lua_createtable(L, 0, 4);
  if (r->result == CURLE_OK) {
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_headers(L, &r->header);
    lua_setfield(L, -2, "headers");
    if (r->on_data_ref == LUA_NOREF) {
      lua_pushlstring(L, r->data.data ? r->data.data : "", r->data.len);
      lua_setfield(L, -2, "body");
    }
  } else {
    if (r->too_big)
      lua_pushfstring(L, "the response is over the %d byte limit", (int)r->max_body);
    else
      lua_pushstring(L, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
    lua_setfield(L, -2, "error");
    lua_pushstring(L, r->too_big ? "EFBIG" : error_code(r->result));
    lua_setfield(L, -2, "code");
    if (status > 0) {
      lua_pushinteger(L, status);
      lua_setfield(L, -2, "status");
    }
  }
  int done = r->on_done_ref;
  r->on_done_ref = LUA_NOREF;
  req_free(r);
  ferry_loop_call(L, done, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, done);
}

/* After socket_action: mark finished transfers, then deliver everything queued. */
static void process(http_multi *m) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(m->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    http_req *r = NULL;
    CURLcode result = msg->data.result;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    curl_multi_remove_handle(m->multi, msg->easy_handle);
    if (!r) continue;
    r->done = 1;
    r->result = result;
    enqueue(r);
  }
  while (m->queue_head && !m->closing) {
    http_req *r = m->queue_head;
    m->queue_head = r->next_queued;
    if (!m->queue_head) m->queue_tail = NULL;
    r->queued = 0;
    deliver(m, r);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  sock_ctx *sc = p->data;
  http_multi *m = sc->m;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running;
  curl_multi_socket_action(m->multi, sc->fd, flags, &running);
  process(m);
}

static void on_idle(uv_idle_t *h) { (void)h; }

static void on_check(uv_check_t *h) {
  http_multi *m = h->data;
  m->kicked = 0;
  uv_idle_stop(&m->idle);
  uv_check_stop(&m->check);
  int running;
  curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  process(m);
}

static void kick(http_multi *m) {
  if (m->kicked || m->closing) return;
  m->kicked = 1;
  uv_idle_start(&m->idle, on_idle);
  uv_check_start(&m->check, on_check);
}

static void on_timeout(uv_timer_t *t) { kick(t->data); }

/* ---- the multi handle of a Lua state ---- */

static void multi_close_cb(uv_handle_t *h) {
  http_multi *m = h->data;
  if (--m->closing_handles == 0) free(m);
}

static void multi_close(http_multi *m) {
  m->closing = 1;
  while (m->live) req_free(m->live);
  curl_multi_cleanup(m->multi); /* closes cached connections: on_socket removes their polls */
  m->closing_handles = 3;
  uv_close((uv_handle_t *)&m->timer, multi_close_cb);
  uv_close((uv_handle_t *)&m->idle, multi_close_cb);
  uv_close((uv_handle_t *)&m->check, multi_close_cb);
}

/* The state is closing: drop every request without telling Lua, close the connections. */
static int multi_gc(lua_State *L) {
  http_multi **ud = luaL_checkudata(L, 1, MULTI_MT);
  if (*ud) multi_close(*ud);
  *ud = NULL;
  return 0;
}

static int l_http_close_idle(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, MULTI_KEY) != LUA_TUSERDATA) {
    lua_pushboolean(L, 1);
    return 1;
  }
  http_multi **ud = lua_touserdata(L, -1);
  if (*ud && (*ud)->live) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (*ud) multi_close(*ud);
  *ud = NULL;
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, MULTI_KEY);
  lua_pushboolean(L, 1);
  return 1;
}

static http_multi *get_multi(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, MULTI_KEY) == LUA_TUSERDATA) {
    http_multi *m = *(http_multi **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (m) return m;
    luaL_error(L, "http_request: the HTTP client is closed"); /* only while the state closes */
  }
  lua_pop(L, 1);
  static int curl_ready;
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) luaL_error(L, "http_request: curl_global_init failed");
    curl_ready = 1;
  }
  uv_loop_t *loop = ferry_loop_get(L); /* before the userdata: the loop must outlive the multi handle */
  http_multi *m = calloc(1, sizeof *m);
  if (!m) luaL_error(L, "ferry: out of memory");
  m->multi = curl_multi_init();
  if (!m->multi) {
    free(m);
    luaL_error(L, "http_request: curl_multi_init failed");
  }
  m->loop = loop;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  m->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  uv_timer_init(loop, &m->timer);
  uv_idle_init(loop, &m->idle);
  uv_check_init(loop, &m->check);
  m->timer.data = m->idle.data = m->check.data = m;
  uv_unref((uv_handle_t *)&m->timer); /* the requests, not the client, keep the loop alive */
  curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
  curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
  static const luaL_Reg meta[] = {{"__gc", multi_gc}, {NULL, NULL}};
  ferry_new_class(L, MULTI_MT, meta, NULL);
  ferry_push_handle(L, m, MULTI_MT);
  lua_setfield(L, LUA_REGISTRYINDEX, MULTI_KEY);
  return m;
}

/* ---- core.http_request ---- */

static int opt_ref(lua_State *L, int opts, const char *field, int type) {
  int t = lua_getfield(L, opts, field);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return LUA_NOREF;
  }
  if (t != type) luaL_error(L, "http_request: opts.%s must be a %s, got %s", field, lua_typename(L, type),
                            luaL_typename(L, -1));
  return luaL_ref(L, LUA_REGISTRYINDEX);
}


static struct curl_slist *opt_headers(lua_State *L, int opts) {
  int t = lua_getfield(L, opts, "headers");
  struct curl_slist *list = NULL;
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TTABLE) luaL_error(L, "http_request: opts.headers must be a list of strings");
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    size_t len;
    if (lua_geti(L, -1, i) != LUA_TSTRING) {
      curl_slist_free_all(list);
      luaL_error(L, "http_request: opts.headers[%d] must be a string", (int)i);
    }
    const char *h = lua_tolstring(L, -1, &len);
    if (strlen(h) != len || strpbrk(h, "\r\n")) {
      curl_slist_free_all(list);
      luaL_error(L, "http_request: opts.headers[%d] contains a line break or a NUL byte", (int)i);
    }
    struct curl_slist *nl = curl_slist_append(list, h);
    lua_pop(L, 1);
    if (!nl) {
      curl_slist_free_all(list);
      luaL_error(L, "ferry: out of memory");
    }
    list = nl;
  }
  lua_pop(L, 1);
  return list;
}

static int l_http_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  const char *url = ferry_opt_string(L, 1, "http_request", "url");
  if (!url) return luaL_error(L, "http_request: opts.url must be a string");
  const char *method = ferry_opt_string(L, 1, "http_request", "method");
  const char *cainfo = ferry_opt_string(L, 1, "http_request", "cainfo");
  long timeout = (long)ferry_opt_uint(L, 1, "http_request", "timeout_ms", 0);
  long connect_timeout = (long)ferry_opt_uint(L, 1, "http_request", "connect_timeout_ms", 10000);
  long stall = (long)ferry_opt_uint(L, 1, "http_request", "stall_timeout_ms", 0);
  long max_body = (long)ferry_opt_uint(L, 1, "http_request", "max_body", DEFAULT_MAX_BODY);
  int t = lua_getfield(L, 1, "body");
  if (t != LUA_TNIL && t != LUA_TSTRING) return luaL_error(L, "http_request: opts.body must be a string");
  lua_pop(L, 1);
  http_multi *m = get_multi(L);
  struct curl_slist *headers = opt_headers(L, 1);

  http_req *r = calloc(1, sizeof *r);
  if (!r) {
    curl_slist_free_all(headers);
    return luaL_error(L, "ferry: out of memory");
  }
  r->m = m;
  r->headers = headers;
  r->max_body = (size_t)max_body;
  r->body_ref = r->on_data_ref = r->on_headers_ref = r->on_done_ref = LUA_NOREF;
  r->next_live = m->live;
  if (m->live) m->live->prev_live = &r->next_live;
  r->prev_live = &m->live;
  m->live = r;
  r->easy = curl_easy_init();
  if (!r->easy) {
    req_free(r);
    return luaL_error(L, "http_request: curl_easy_init failed");
  }
  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* the path is sent byte for byte as signed */
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
  if (timeout > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
  if (stall > 0) { /* curl counts whole seconds: less than 1 byte a second for that long */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (stall + 999) / 1000);
  }
  if (cainfo) curl_easy_setopt(e, CURLOPT_CAINFO, cainfo);
  if (headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  if (lua_getfield(L, 1, "body") == LUA_TSTRING) {
    size_t len;
    const char *body = lua_tolstring(L, -1, &len);
    r->body_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* curl reads it in place until the request ends */
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  } else {
    lua_pop(L, 1);
    if (!method || strcmp(method, "GET") == 0) curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  }
  if (method) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  r->on_data_ref = opt_ref(L, 1, "on_data", LUA_TFUNCTION);
  r->on_headers_ref = opt_ref(L, 1, "on_headers", LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  r->on_done_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  CURLMcode mc = curl_multi_add_handle(m->multi, e);
  if (mc != CURLM_OK) {
    req_free(r);
    return ferry_fail(L, "EIO", "http %s: %s", url, curl_multi_strerror(mc));
  }
  r->counted = 1;
  if (m->inflight++ == 0) uv_ref((uv_handle_t *)&m->timer); /* a request in flight keeps the loop alive */
  r->owner = (http_req **)ferry_push_handle(L, r, REQ_MT);
  return 1;
}

/* request:abort(): stop the transfer; its on_done never runs. */
static int l_abort(lua_State *L) {
  http_req **ud = luaL_checkudata(L, 1, REQ_MT);
  http_req *r = *ud;
  if (!r || r->aborted) return 0;
  r->aborted = 1;
  curl_multi_remove_handle(r->m->multi, r->easy);
  curl_easy_cleanup(r->easy);
  r->easy = NULL;
  if (!r->queued && !r->delivering) req_free(r); /* else freed once the queue reaches it */
  return 0;
}

/* The handle went away: the request runs to its end and on_done still runs. */
static int l_req_gc(lua_State *L) {
  http_req **ud = luaL_checkudata(L, 1, REQ_MT);
  if (*ud) (*ud)->owner = NULL;
  *ud = NULL;
  return 0;
}

void ferry_open_http_client(lua_State *L) {
  static const luaL_Reg methods[] = {{"abort", l_abort}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", l_req_gc}, {NULL, NULL}};
  ferry_new_class(L, REQ_MT, meta, methods);
  lua_pushcfunction(L, l_http_request);
  lua_setfield(L, -2, "http_request");
  lua_pushcfunction(L, l_http_close_idle);
  lua_setfield(L, -2, "http_close_idle");
}
