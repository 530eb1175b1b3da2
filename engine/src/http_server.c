/* HTTP/1.1 server: libh2o (its libuv flavour) on the engine's loop, plain or TLS.
 *
 * core.http_listen(opts, on_request) -> server | nil, msg, code
 *   opts.host, opts.port (0: a free port), tls_cert + tls_key (PEM files: HTTPS), max_body (bytes; a bigger
 *   request body gets 413 from h2o, with a JSON body like h2o's other early errors: see json_errors),
 *   idle_timeout_ms (reading one request, headers and body, and the wait for the next one on a kept-alive
 *   connection: a slow or idle client is disconnected), max_connections (more are accepted and closed at once)
 *   on_request(req, res) for each request: req = {method, path (as sent, with the query), host (the Host
 *   header), headers = {lowercase name = value}, header_bytes, body}; res is the response:
 *     res:respond(status, headers, body)   the whole response (headers: {name = value})
 *     res:start(status, headers)            a streamed response (chunked), then
 *     res:write(chunk, cb)                  cb(nil) once h2o wrote it (one write at a time: flow control),
 *                                           cb("closed") when the client went away first
 *     res:finish()                          the end of the stream
 *     res:on_close(fn)                      fn() once if the client goes away before the response ended
 *     res.closed                            true once the client is gone
 *   These callbacks run inside h2o: they must only record and schedule, never block.
 * server.port, server:connections(), server:close() (stops accepting; kept-alive connections end at their
 * idle timeout)
 *
 * libh2o 2.2 buffers a request body whole before the handler runs (no streaming uploads), which is why the
 * bridge protocol sends stdin as a sequence of bounded requests.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"

#define SERVER_MT "ferry.http_server"
#define RES_MT "ferry.http_response"

typedef struct http_server {
  h2o_globalconf_t config;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept_ctx;
  uv_tcp_t listener;
  SSL_CTX *ssl;
  lua_State *L; /* main thread */
  int on_request_ref;
  int port, connections, max_connections;
  int closing;
  struct http_server **owner;
  struct http_server *next_retired;
} http_server;

static http_server *retired; /* closed servers, kept (and reachable) for the process's life: see below */

typedef struct server_handler {
  h2o_handler_t super;
  http_server *srv;
} server_handler;

typedef struct server_conn {
  uv_tcp_t tcp; /* first: h2o hands this pointer to the close callback */
  http_server *srv;
} server_conn;

typedef struct sreq {
  h2o_generator_t gen;
  h2o_req_t *req; /* NULL once h2o disposed the request */
  http_server *srv;
  int started, finished, sending, closed;
  int chunk_ref, write_cb_ref, on_close_ref;
  struct sreq **owner;
} sreq;

static const char *reason_of(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 413: return "Payload Too Large";
  case 421: return "Misdirected Request";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  default: return "Status";
  }
}

/* ---- lifetime of the server ----
 * A closed server stops listening and drops its Lua handler once its last connection ended, but its h2o
 * context stays allocated: h2o 2.2's h2o_context_dispose runs the loop recursively (uv_run inside a
 * callback) and asserts on timers a just-closed connection may still hold. A server is closed once per
 * process in practice, so the few kilobytes are the better trade. */

static void maybe_release(http_server *s) {
  if (s->closing && s->connections == 0) ferry_unref(s->L, &s->on_request_ref);
}

static void server_close(http_server *s) {
  if (s->closing) return;
  s->closing = 1;
  if (s->owner) *s->owner = NULL;
  s->owner = NULL;
  s->next_retired = retired;
  retired = s;
  h2o_context_request_shutdown(&s->ctx);
  uv_close((uv_handle_t *)&s->listener, NULL);
  maybe_release(s);
}

static void conn_closed_cb(uv_handle_t *h) {
  server_conn *c = (server_conn *)h;
  http_server *s = c->srv;
  free(c);
  s->connections--;
  maybe_release(s);
}

static void refused_closed_cb(uv_handle_t *h) { free(h); }

static void on_accept(uv_stream_t *listener, int status) {
  http_server *s = listener->data;
  if (status != 0 || s->closing) return;
  server_conn *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = s;
  uv_tcp_init(listener->loop, &c->tcp);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || s->connections >= s->max_connections) {
    uv_close((uv_handle_t *)&c->tcp, refused_closed_cb);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1); /* small responses and frames go out at once */
  s->connections++;
  h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, conn_closed_cb);
  h2o_accept(&s->accept_ctx, sock);
}

/* ---- one request ---- */

static void call_write_cb(sreq *r, const char *err) {
  lua_State *L = ferry_loop_thread(r->srv->L);
  ferry_unref(L, &r->chunk_ref);
  int cb = r->write_cb_ref;
  r->write_cb_ref = LUA_NOREF;
  r->sending = 0;
  if (cb == LUA_NOREF) return;
  if (err)
    lua_pushstring(L, err);
  else
    lua_pushnil(L);
  ferry_loop_call(L, cb, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, cb);
}

static void gen_proceed(h2o_generator_t *gen, h2o_req_t *req) {
  (void)req;
  call_write_cb((sreq *)gen, NULL);
}

static void gen_stop(h2o_generator_t *gen, h2o_req_t *req) {
  (void)gen;
  (void)req; /* the request is being disposed: sreq_dispose follows and reports it */
}

/* h2o freed the request (response done, or the connection closed). */
static void sreq_dispose(void *p) {
  sreq *r = p;
  r->req = NULL;
  if (r->owner) *r->owner = NULL;
  r->owner = NULL;
  lua_State *L = ferry_loop_thread(r->srv->L);
  if (!r->finished) {
    r->closed = 1;
    if (r->sending) call_write_cb(r, "closed");
    if (r->on_close_ref != LUA_NOREF) {
      int fn = r->on_close_ref;
      r->on_close_ref = LUA_NOREF;
      ferry_loop_call(L, fn, 0);
      luaL_unref(L, LUA_REGISTRYINDEX, fn);
    }
  }
  ferry_unref(L, &r->chunk_ref);
  ferry_unref(L, &r->write_cb_ref);
  ferry_unref(L, &r->on_close_ref);
}

static void push_lower(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    luaL_addchar(&b, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c));
  }
  luaL_pushresult(&b);
}

/* The request as a Lua table. */
static void push_request(lua_State *L, h2o_req_t *req) {
  lua_createtable(L, 0, 7);
  lua_pushlstring(L, req->input.method.base, req->input.method.len);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, req->input.path.base, req->input.path.len);
  lua_setfield(L, -2, "path");
  lua_pushlstring(L, req->input.authority.base, req->input.authority.len);
  lua_setfield(L, -2, "host");
  size_t header_bytes = req->input.path.len;
  lua_createtable(L, 0, (int)req->headers.size);
  for (size_t i = 0; i < req->headers.size; i++) {
    h2o_header_t *h = req->headers.entries + i;
    header_bytes += h->name->len + h->value.len + 4;
    push_lower(L, h->name->base, h->name->len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) { /* a repeated header: values joined as HTTP allows */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->value.base, h->value.len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value.base, h->value.len);
    }
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
  lua_pushinteger(L, (lua_Integer)header_bytes);
  lua_setfield(L, -2, "header_bytes");
  lua_pushlstring(L, req->entity.base ? req->entity.base : "", req->entity.base ? req->entity.len : 0);
  lua_setfield(L, -2, "body");
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
  http_server *s = ((server_handler *)self)->srv;
  if (s->on_request_ref == LUA_NOREF) return -1;
  sreq *r = h2o_mem_alloc_shared(&req->pool, sizeof *r, sreq_dispose);
  memset(r, 0, sizeof *r);
  r->req = req;
  r->srv = s;
  r->chunk_ref = r->write_cb_ref = r->on_close_ref = LUA_NOREF;
  r->gen.proceed = gen_proceed;
  r->gen.stop = gen_stop;
  lua_State *L = ferry_loop_thread(s->L);
  push_request(L, req);
  r->owner = (sreq **)ferry_push_handle(L, r, RES_MT);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->on_request_ref);
  int fn = luaL_ref(L, LUA_REGISTRYINDEX); /* the server may close (and drop its ref) inside the call */
  ferry_loop_call(L, fn, 2);
  luaL_unref(L, LUA_REGISTRYINDEX, fn);
  return 0;
}

/* ---- the response object ---- */

static sreq *check_res(lua_State *L) {
  sreq **ud = luaL_checkudata(L, 1, RES_MT);
  return *ud;
}

static void set_headers(lua_State *L, int idx, h2o_req_t *req) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t nl, vl;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "http response: headers must map names to strings");
    const char *name = lua_tolstring(L, -2, &nl);
    const char *value = lua_tolstring(L, -1, &vl);
    if (strpbrk(value, "\r\n") || strlen(value) != vl) luaL_error(L, "http response: bad header value for %s", name);
    h2o_iovec_t n = h2o_strdup(&req->pool, name, nl);
    h2o_strtolower(n.base, n.len);
    h2o_iovec_t v = h2o_strdup(&req->pool, value, vl);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, n.len, 1, NULL, v.base, v.len);
    lua_pop(L, 1);
  }
}

static int begin(lua_State *L, sreq *r, const char *fn) {
  if (!r || !r->req) return 0;
  if (r->started) luaL_error(L, "http response: %s after the response started", fn);
  lua_Integer status = luaL_checkinteger(L, 2);
  if (status < 100 || status > 599) luaL_error(L, "http response: status %d out of range", (int)status);
  r->req->res.status = (int)status;
  r->req->res.reason = reason_of((int)status);
  set_headers(L, 3, r->req);
  r->started = 1;
  return 1;
}

/* res:respond(status, headers, body) -> true | nil, "closed", "EPIPE" */
static int l_respond(lua_State *L) {
  sreq *r = check_res(L);
  size_t len = 0;
  const char *body = luaL_optlstring(L, 4, "", &len);
  if (!begin(L, r, "respond")) return ferry_fail(L, "EPIPE", "closed");
  r->finished = 1;
  r->req->res.content_length = len;
  h2o_send_inline(r->req, body, len); /* copies the body into the request's pool */
  lua_pushboolean(L, 1);
  return 1;
}

/* res:start(status, headers) -> true | nil, "closed", "EPIPE" */
static int l_start(lua_State *L) {
  sreq *r = check_res(L);
  if (!begin(L, r, "start")) return ferry_fail(L, "EPIPE", "closed");
  h2o_start_response(r->req, &r->gen);
  lua_pushboolean(L, 1);
  return 1;
}

/* res:write(chunk, cb) -> true | nil, "closed", "EPIPE" */
static int l_write(lua_State *L) {
  sreq *r = check_res(L);
  size_t len;
  const char *chunk = luaL_checklstring(L, 2, &len);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (!r || !r->req) return ferry_fail(L, "EPIPE", "closed");
  if (!r->started || r->finished) return luaL_error(L, "http response: write outside a started stream");
  if (r->sending) return luaL_error(L, "http response: write while the previous write is in flight");
  r->sending = 1;
  lua_pushvalue(L, 2);
  r->chunk_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* h2o writes from it in place until proceed */
  lua_pushvalue(L, 3);
  r->write_cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  h2o_iovec_t buf = h2o_iovec_init(chunk, len);
  h2o_send(r->req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
  lua_pushboolean(L, 1);
  return 1;
}

/* res:finish() -> true | nil, "closed", "EPIPE" */
static int l_finish(lua_State *L) {
  sreq *r = check_res(L);
  if (!r || !r->req) return ferry_fail(L, "EPIPE", "closed");
  if (!r->started || r->finished) return luaL_error(L, "http response: finish outside a started stream");
  if (r->sending) return luaL_error(L, "http response: finish while a write is in flight");
  r->finished = 1;
  h2o_send(r->req, NULL, 0, H2O_SEND_STATE_FINAL);
  lua_pushboolean(L, 1);
  return 1;
}

/* res:on_close(fn) */
static int l_on_close(lua_State *L) {
  sreq *r = check_res(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!r) return 0;
  ferry_unref(L, &r->on_close_ref);
  lua_pushvalue(L, 2);
  r->on_close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int l_res_index(lua_State *L) {
  sreq **ud = luaL_checkudata(L, 1, RES_MT);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "closed") == 0) {
    lua_pushboolean(L, *ud == NULL || (*ud)->closed || (*ud)->req == NULL);
    return 1;
  }
  return ferry_push_method(L, k);
}

static int l_res_gc(lua_State *L) {
  sreq **ud = luaL_checkudata(L, 1, RES_MT);
  if (*ud) (*ud)->owner = NULL;
  *ud = NULL;
  return 0;
}

/* ---- the server object ---- */

static http_server *check_server(lua_State *L) {
  http_server **ud = luaL_checkudata(L, 1, SERVER_MT);
  return *ud;
}

static int l_close(lua_State *L) {
  http_server *s = check_server(L);
  if (s) server_close(s);
  return 0;
}

static int l_connections(lua_State *L) {
  http_server *s = check_server(L);
  lua_pushinteger(L, s ? s->connections : 0);
  return 1;
}

static int l_server_index(lua_State *L) {
  http_server *s = check_server(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "port") == 0) {
    if (s) lua_pushinteger(L, s->port);
    else lua_pushnil(L);
    return 1;
  }
  return ferry_push_method(L, k);
}

/* ---- h2o's own errors as JSON ----
 * h2o answers some requests itself, before any handler runs: a body over max_body (413), a malformed request
 * (400), an unknown Expect (417). It does so in plain text, through the host's fallback path (every request
 * that reaches a handler goes through the "/" path instead). A filter on the fallback path turns those answers
 * into the JSON envelope {"error": code, "message": text} the bridge's clients read. */

typedef struct json_errors {
  h2o_filter_t super;
  size_t max_body;
} json_errors;

typedef struct json_error_body {
  h2o_ostream_t super;
  h2o_iovec_t body;
} json_error_body;

static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                            h2o_send_state_t state) {
  json_error_body *os = (json_error_body *)self;
  if (bufcnt > 0) { /* the plain text h2o wrote (none for HEAD) */
    bufs = &os->body;
    bufcnt = 1;
  }
  h2o_ostream_send_next(&os->super, req, bufs, bufcnt, state);
}

static void json_errors_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot) {
  int status = req->res.status;
  if (status >= 400) {
    const char *code = status == 413 ? "too_large" : status == 404 ? "not_found" : status >= 500 ? "internal"
                                                                                             : "bad_request";
    char msg[160];
    if (status == 413)
      snprintf(msg, sizeof msg, "the request's body is over %zu bytes", ((json_errors *)self)->max_body);
    else
      snprintf(msg, sizeof msg, "%s", req->res.reason ? req->res.reason : "refused by the HTTP layer");
    char text[256];
    int n = snprintf(text, sizeof text, "{\"error\":\"%s\",\"message\":\"%s\"}", code, msg);
    json_error_body *os = (json_error_body *)h2o_add_ostream(req, sizeof *os, slot);
    os->super.do_send = json_error_send;
    os->body = h2o_strdup(&req->pool, text, (size_t)n);
    req->res.content_length = (size_t)n;
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i != -1)
      req->res.headers.entries[i].value = h2o_iovec_init(H2O_STRLIT("application/json"));
    else
      h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    slot = &os->super.next;
  }
  h2o_setup_next_ostream(req, slot);
}

/* ---- core.http_listen ---- */

static void listener_free_cb(uv_handle_t *h) { free(h->data); }

/* h2o's context starts an async handle for a thread queue this server never uses: unreferenced, so that an
 * idle server does not keep the loop alive (its listener does, while it listens). */
typedef struct handle_set {
  uv_handle_t *items[64];
  int n, unref;
} handle_set;

static void async_walk_cb(uv_handle_t *h, void *arg) {
  handle_set *set = arg;
  if (h->type != UV_ASYNC) return;
  if (!set->unref) {
    if (set->n < 64) set->items[set->n++] = h;
    return;
  }
  for (int i = 0; i < set->n; i++)
    if (set->items[i] == h) return;
  uv_unref(h);
}

static lua_Integer opt_int(lua_State *L, int opts, const char *field, lua_Integer dflt, lua_Integer min) {
  int t = lua_getfield(L, opts, field);
  lua_Integer v = dflt;
  if (t != LUA_TNIL) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < min) luaL_error(L, "http_listen: opts.%s must be an integer >= %d", field, (int)min);
  }
  lua_pop(L, 1);
  return v;
}


static SSL_CTX *tls_context(const char *cert, const char *key, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  const char *step = "SSL_CTX_new";
  if (ctx) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    step = cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) == 1) {
      step = key;
      if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 && SSL_CTX_check_private_key(ctx) == 1)
        return ctx;
    }
  }
  char reason[200] = "unknown error";
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  snprintf(err, errlen, "%s: %s", step, reason);
  if (ctx) SSL_CTX_free(ctx);
  return NULL;
}

static int l_http_listen(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  const char *host = ferry_opt_string(L, 1, "http_listen", "host");
  if (!host) host = "127.0.0.1";
  lua_Integer port = opt_int(L, 1, "port", 0, 0);
  if (port > 65535) return luaL_error(L, "http_listen: opts.port must be between 0 and 65535");
  lua_Integer max_body = opt_int(L, 1, "max_body", 1024 * 1024, 0);
  lua_Integer idle = opt_int(L, 1, "idle_timeout_ms", 10000, 1);
  lua_Integer max_conn = opt_int(L, 1, "max_connections", 256, 1);
  const char *cert = ferry_opt_string(L, 1, "http_listen", "tls_cert");
  const char *key = ferry_opt_string(L, 1, "http_listen", "tls_key");
  if ((cert == NULL) != (key == NULL)) return luaL_error(L, "http_listen: opts.tls_cert and opts.tls_key go together");

  struct sockaddr_storage addr;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr) != 0)
    return ferry_fail(L, "EINVAL", "listen %s:%d: not an IP address", host, (int)port);
  SSL_CTX *ssl = NULL;
  if (cert) {
    char err[400];
    ssl = tls_context(cert, key, err, sizeof err);
    if (!ssl) return ferry_fail(L, "ETLS", "listen %s:%d: TLS: %s", host, (int)port, err);
  }
  uv_loop_t *loop = ferry_loop_get(L);
  signal(SIGPIPE, SIG_IGN);
  http_server *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "ferry: out of memory");
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  int rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 128, on_accept);
  if (rc != 0) {
    if (ssl) SSL_CTX_free(ssl);
    uv_close((uv_handle_t *)&s->listener, listener_free_cb);
    return ferry_fail(L, uv_err_name(rc), "listen %s:%d: %s", host, (int)port, uv_strerror(rc));
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
  s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  s->ssl = ssl;
  s->max_connections = (int)max_conn;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  s->L = lua_tothread(L, -1);
  lua_pop(L, 1);

  h2o_config_init(&s->config); /* limits first: h2o_context_init copies the timeouts */
  s->config.server_name = h2o_iovec_init(H2O_STRLIT("ferry"));
  s->config.max_request_entity_size = (size_t)max_body;
  s->config.http1.req_timeout = (uint64_t)idle;
  s->config.http1.upgrade_to_http2 = 0;
  s->config.handshake_timeout = (uint64_t)idle;
  h2o_hostconf_t *hc = h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
  json_errors *je = (json_errors *)h2o_create_filter(&hc->fallback_path, sizeof *je);
  je->super.on_setup_ostream = json_errors_setup;
  je->max_body = (size_t)max_body;
  h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
  server_handler *h = (server_handler *)h2o_create_handler(pc, sizeof *h);
  h->super.on_req = on_req;
  h->srv = s;
  handle_set before = {.n = 0, .unref = 0};
  uv_walk(loop, async_walk_cb, &before);
  h2o_context_init(&s->ctx, loop, &s->config);
  before.unref = 1;
  uv_walk(loop, async_walk_cb, &before);
  s->accept_ctx.ctx = &s->ctx;
  s->accept_ctx.hosts = s->config.hosts;
  s->accept_ctx.ssl_ctx = ssl;
  lua_pushvalue(L, 2);
  s->on_request_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  s->owner = (http_server **)ferry_push_handle(L, s, SERVER_MT);
  return 1;
}

/* The handle was collected: stop listening (the connections end on their own). */
static int l_server_gc(lua_State *L) {
  http_server **ud = luaL_checkudata(L, 1, SERVER_MT);
  http_server *s = *ud;
  *ud = NULL;
  if (s) server_close(s);
  return 0;
}

void ferry_open_http_server(lua_State *L) {
  static const luaL_Reg res_methods[] = {{"respond", l_respond}, {"start", l_start},       {"write", l_write},
                                         {"finish", l_finish},   {"on_close", l_on_close}, {NULL, NULL}};
  static const luaL_Reg res_meta[] = {{"__index", l_res_index}, {"__gc", l_res_gc}, {NULL, NULL}};
  ferry_new_handle_class(L, RES_MT, res_meta, res_methods);
  static const luaL_Reg server_methods[] = {{"close", l_close}, {"connections", l_connections}, {NULL, NULL}};
  static const luaL_Reg server_meta[] = {{"__index", l_server_index}, {"__gc", l_server_gc}, {NULL, NULL}};
  ferry_new_handle_class(L, SERVER_MT, server_meta, server_methods);
  lua_pushcfunction(L, l_http_listen);
  lua_setfield(L, -2, "http_listen");
}
