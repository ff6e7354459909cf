/*
 * keeper.c - the node plugin's descriptor keeper (see keeper.h).
 */
#include "csi/keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log.h"
#include "common/retry.h"
#include "csi/fdchan.h"

#define KEEPER_MAX_CONNS 1024
/* One volume's pod may hold this many: it cannot use up KEEPER_MAX_CONNS. */
#define KEEPER_CONNS_PER_VOLUME 8
/* A connection that has not said hello by then is closed. */
#define KEEPER_HELLO_MS 5000
#define KEEPER_FULL_LOG_MS 10000
/* /dev/fuse: the misc device's major and the FUSE minor. */
#define KEEPER_FUSE_MAJOR 10
#define KEEPER_FUSE_MINOR 229
#define KEEPER_POLL_MS 200
#define KEEPER_UNKNOWN_MAX 16

struct conn {
	int sock;
	char *bound;                /* the volume of the socket it came through */
	char *volume;               /* NULL until its hello */
	uint64_t conn;              /* the connection its descriptor belongs to; 0 = none */
	bool asked;                 /* sent "send": one descriptor is awaited */
	bool stalled;               /* a send found its queue full: closed next round */
	uint64_t accepted_ms;       /* for the hello deadline */
	struct keeper_supervisor sup;
	struct conn *next;
};

struct entry {
	char *volume;
	json_t *argv;
	char *init_state;
	int fd;                     /* our copy; -1 = none */
	uint64_t conn;
	uint64_t alone_since_ms;
	struct entry *next;
};

/* A volume's socket. */
struct listener {
	int sock;
	char *volume, *path;
	struct log_limiter full_log; /* connections refused past KEEPER_CONNS_PER_VOLUME */
	struct listener *next;
};

struct keeper {
	pthread_mutex_t mu;
	struct listener *listeners; /* protected by mu */
	struct listener *retired;   /* forgotten; closed by the thread (mu) */
	int wake[2];                /* a pipe that wakes the thread */
	bool stopping;              /* protected by mu */
	pthread_t thread;
	bool running;
	struct conn *conns;         /* the thread's; read under mu */
	struct entry *entries;      /* protected by mu */
	size_t nconns;
	struct {
		char pod[KEEPER_NAME_MAX];
		char *volume;
	} unknown[KEEPER_UNKNOWN_MAX]; /* protected by mu */
	size_t nunknown;
};

static void entry_free(struct entry *e)
{
	if (e->fd >= 0)
		close(e->fd);
	json_decref(e->argv);
	free(e->init_state);
	free(e->volume);
	free(e);
}

static struct entry *find(struct keeper *k, const char *volume)
{
	for (struct entry *e = k->entries; e; e = e->next)
		if (strcmp(e->volume, volume) == 0)
			return e;
	return NULL;
}

static unsigned supervisors_of(struct keeper *k, const char *volume)
{
	unsigned n = 0;

	for (struct conn *c = k->conns; c; c = c->next)
		if (c->volume && strcmp(c->volume, volume) == 0)
			n++;
	return n;
}

/* Sends the entry's descriptor and argv to c, unless c stalled (it is
 * closed at the next round). Called under mu. */
static void send_fd(struct conn *c, const struct entry *e, bool fresh)
{
	json_t *m;
	struct error err;

	if (c->stalled)
		return;
	m = json_pack("{s:s, s:O, s:s, s:I, s:b}", "op", "fd", "argv", e->argv, "init_state",
		      e->init_state ? e->init_state : "", "conn", (json_int_t)e->conn, "fresh", fresh);
	if (!m)
		return;
	if (fdchan_send(c->sock, m, e->fd, &err) != ERR_OK) {
		log_warn("cannot hand a FUSE connection to granary-mount", LOG_S("volume", e->volume),
			 LOG_S("pod", c->sup.pod), LOG_S("cause", err.msg));
		c->stalled = c->stalled || err.code == ERR_TIMEOUT;
	} else
		log_info("FUSE connection handed to granary-mount", LOG_S("volume", e->volume),
			 LOG_S("pod", c->sup.pod), LOG_U("conn", e->conn),
			 LOG_S("fresh", fresh ? "true" : "false"));
	c->conn = e->conn;
	json_decref(m);
}

static void send_op(struct conn *c, const char *op)
{
	json_t *m = c->stalled ? NULL : json_pack("{s:s}", "op", op);
	struct error err;

	if (m && fdchan_send(c->sock, m, -1, &err) != ERR_OK)
		c->stalled = c->stalled || err.code == ERR_TIMEOUT;
	json_decref(m);
}

static void read_status(struct conn *c, json_t *m)
{
	json_t *v;

	if ((v = json_object_get(m, "daemon_pid")) && json_is_integer(v))
		c->sup.daemon_pid = (long)json_integer_value(v);
	if ((v = json_object_get(m, "restarts")) && json_is_integer(v))
		c->sup.restarts = (unsigned)json_integer_value(v);
	if ((v = json_object_get(m, "backoff_ms")) && json_is_integer(v))
		c->sup.backoff_ms = (uint64_t)json_integer_value(v);
	if ((v = json_object_get(m, "last_exit")) && json_is_string(v))
		snprintf(c->sup.last_exit, sizeof(c->sup.last_exit), "%s", json_string_value(v));
}

/* A hello: attaches c to its volume and settles who holds what. Under mu. */
static bool on_hello(struct keeper *k, struct conn *c, json_t *m)
{
	const char *volume = json_string_value(json_object_get(m, "volume"));
	const char *pod = json_string_value(json_object_get(m, "pod"));
	const char *tmpl = json_string_value(json_object_get(m, "template"));
	json_int_t conn = json_integer_value(json_object_get(m, "conn"));
	struct entry *e;

	if (!volume || c->volume)
		return false;
	/* A pod sees its own volume's socket only: a hello for another volume
	 * would be a mount pod asking for a connection not its own. */
	if (strcmp(volume, c->bound) != 0) {
		log_warn("granary-mount asked for another volume than its socket's; refused",
			 LOG_S("volume", c->bound), LOG_S("asked_for", volume),
			 LOG_S("pod", pod ? pod : ""));
		return false;
	}
	c->volume = strdup(volume);
	if (!c->volume)
		return false;
	snprintf(c->sup.pod, sizeof(c->sup.pod), "%s", pod ? pod : "");
	snprintf(c->sup.template_hash, sizeof(c->sup.template_hash), "%s", tmpl ? tmpl : "");
	c->conn = conn > 0 ? (uint64_t)conn : 0;
	read_status(c, m);
	e = find(k, volume);
	if (!e) {
		log_warn("granary-mount for a volume this node has not staged; it waits",
			 LOG_S("volume", volume), LOG_S("pod", c->sup.pod));
		send_op(c, "unknown");
		if (*c->sup.pod && k->nunknown < KEEPER_UNKNOWN_MAX) {
			bool listed = false;

			for (size_t i = 0; i < k->nunknown; i++)
				listed = listed || strcmp(k->unknown[i].pod, c->sup.pod) == 0;
			if (!listed && (k->unknown[k->nunknown].volume = strdup(volume)))
				snprintf(k->unknown[k->nunknown++].pod, KEEPER_NAME_MAX, "%s", c->sup.pod);
		}
		return true;
	}
	e->alone_since_ms = 0;
	log_info("granary-mount connected", LOG_S("volume", volume), LOG_S("pod", c->sup.pod),
		 LOG_S("template", c->sup.template_hash), LOG_U("conn", c->conn),
		 LOG_I("daemon_pid", c->sup.daemon_pid));
	if (e->fd >= 0 && c->conn != e->conn)
		send_fd(c, e, c->conn != 0);
	else if (e->fd < 0 && c->conn != 0) {
		send_op(c, "send");
		c->asked = true;
	}
	return true;
}

/* Whether fd is /dev/fuse. The pod chose it: AT_STATX_DONT_SYNC keeps a
 * file on a filesystem it serves (FUSE) from making us wait for it. */
static bool is_fuse_dev(int fd)
{
	struct statx stx;

	return statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &stx) == 0 &&
	       S_ISCHR(stx.stx_mode) && stx.stx_rdev_major == KEEPER_FUSE_MAJOR &&
	       stx.stx_rdev_minor == KEEPER_FUSE_MINOR;
}

/*
 * A descriptor a supervisor gave back: taken only after "send" on this
 * connection, for the connection its hello named, and when it is
 * /dev/fuse (fuse: is_fuse_dev, checked outside mu), for the plugin
 * writes FUSE_NOTIFY_RESEND to it and hands it to the next mount pod.
 * Under mu; true when fd was taken (else the caller closes it).
 */
static bool on_fd(struct keeper *k, struct conn *c, json_t *m, int fd, bool fuse)
{
	json_int_t conn = json_integer_value(json_object_get(m, "conn"));
	struct entry *e = c->volume ? find(k, c->volume) : NULL;
	bool asked = c->asked;

	c->asked = false;
	if (fd < 0)
		return false;
	if (!asked || !fuse || conn <= 0 || (uint64_t)conn != c->conn) {
		log_warn("granary-mount sent a descriptor the keeper did not ask for, or not /dev/fuse; closed",
			 LOG_S("volume", c->bound), LOG_S("pod", c->sup.pod), LOG_I("conn", conn),
			 LOG_S("asked", asked ? "true" : "false"),
			 LOG_S("fuse", fuse ? "true" : "false"));
		return false;
	}
	/* Unknown by now, or another supervisor gave it back first. */
	if (!e || e->fd >= 0)
		return false;
	e->fd = fd;
	e->conn = (uint64_t)conn;
	log_info("FUSE connection recovered from granary-mount", LOG_S("volume", e->volume),
		 LOG_S("pod", c->sup.pod), LOG_U("conn", e->conn));
	/* Others that came while we held none. */
	for (struct conn *o = k->conns; o; o = o->next)
		if (o != c && o->volume && strcmp(o->volume, e->volume) == 0 && o->conn != e->conn)
			send_fd(o, e, o->conn != 0);
	return true;
}

static void conn_close(struct keeper *k, struct conn **link)
{
	struct conn *c = *link;
	struct entry *e = c->volume ? find(k, c->volume) : NULL;

	*link = c->next;
	k->nconns--;
	if (c->volume)
		log_info("granary-mount disconnected", LOG_S("volume", c->volume),
			 LOG_S("pod", c->sup.pod));
	/* Descriptors the pod sent and we did not read are closed with it. */
	fdchan_close_async(c->sock);
	if (e && supervisors_of(k, e->volume) == 0)
		e->alone_since_ms = retry_now_ms();
	free(c->bound);
	free(c->volume);
	free(c);
}

static void on_readable(struct keeper *k, struct conn **link)
{
	struct conn *c = *link;
	const char *op;
	struct error err;
	bool fuse;
	json_t *m;
	int fd;

	if (fdchan_recv(c->sock, &m, &fd, 0, &err) != ERR_OK) {
		if (err.code != ERR_TIMEOUT) {
			pthread_mutex_lock(&k->mu);
			conn_close(k, link);
			pthread_mutex_unlock(&k->mu);
		}
		return;
	}
	op = json_string_value(json_object_get(m, "op"));
	fuse = fd >= 0 && is_fuse_dev(fd);
	pthread_mutex_lock(&k->mu);
	if (op && strcmp(op, "hello") == 0) {
		if (!on_hello(k, c, m))
			conn_close(k, link);
	} else if (op && strcmp(op, "status") == 0 && c->volume) {
		read_status(c, m);
	} else if (op && strcmp(op, "fd") == 0 && on_fd(k, c, m, fd, fuse)) {
		fd = -1;
	}
	pthread_mutex_unlock(&k->mu);
	/* A pod's descriptor can block in close (a lingering TCP socket). */
	fdchan_close_async(fd);
	json_decref(m);
}

/* Under mu. */
static void on_accept(struct keeper *k, struct listener *l)
{
	int s;

	/* Non-blocking: the keeper sends under mu, and a granary-mount that
	 * stopped reading must not hold every volume up (a full queue fails
	 * the send, and the connection is closed: see close_stale). */
	while ((s = accept4(l->sock, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
		unsigned on_socket = 0;
		struct conn *c = NULL;

		for (struct conn *o = k->conns; o; o = o->next)
			on_socket += strcmp(o->bound, l->volume) == 0;
		if (on_socket >= KEEPER_CONNS_PER_VOLUME)
			log_limited_warn(&l->full_log,
					 "too many granary-mount connections on a volume's socket; refused",
					 LOG_S("volume", l->volume), LOG_U("limit", KEEPER_CONNS_PER_VOLUME));
		else if (k->nconns < KEEPER_MAX_CONNS)
			c = calloc(1, sizeof(*c));
		if (!c || !(c->bound = strdup(l->volume))) {
			free(c);
			fdchan_close_async(s);
			continue;
		}
		c->sock = s;
		c->accepted_ms = retry_now_ms();
		c->next = k->conns;
		k->conns = c;
		k->nconns++;
	}
}

/* Closes the connections that said no hello within KEEPER_HELLO_MS, and
 * those whose queue was full at a send (their granary-mount stopped
 * reading; it connects again once it reads, and is sent what it holds
 * then). Under mu. */
static void close_stale(struct keeper *k)
{
	uint64_t now = retry_now_ms();

	for (struct conn **l = &k->conns; *l;) {
		if ((*l)->stalled) {
			log_warn("granary-mount stopped reading; disconnected",
				 LOG_S("volume", (*l)->bound), LOG_S("pod", (*l)->sup.pod));
			conn_close(k, l);
		} else if (!(*l)->volume && now - (*l)->accepted_ms >= KEEPER_HELLO_MS) {
			log_warn("granary-mount said no hello in time; disconnected",
				 LOG_S("volume", (*l)->bound), LOG_U("after_ms", KEEPER_HELLO_MS));
			conn_close(k, l);
		} else {
			l = &(*l)->next;
		}
	}
}

static void listener_free(struct listener *l)
{
	if (l->sock >= 0)
		close(l->sock);
	log_limiter_release(&l->full_log);
	free(l->volume);
	free(l->path);
	free(l);
}

/* One round: polls the wake pipe, the listeners and the connections.
 * false once the keeper stops. */
static bool keeper_round(struct keeper *k, struct pollfd **p, size_t *cap)
{
	struct conn ***links;
	size_t n = 0, nl = 0, want;
	char drain[64];

	pthread_mutex_lock(&k->mu);
	while (k->retired) {
		struct listener *l = k->retired;

		k->retired = l->next;
		listener_free(l);
	}
	if (k->stopping) {
		pthread_mutex_unlock(&k->mu);
		return false;
	}
	want = 1 + k->nconns;
	for (struct listener *l = k->listeners; l; l = l->next)
		want++;
	if (want > *cap) {
		struct pollfd *grown = realloc(*p, want * (sizeof(**p) + sizeof(*links)));

		if (!grown) {
			pthread_mutex_unlock(&k->mu);
			retry_sleep_ms(KEEPER_POLL_MS);
			return true;
		}
		*p = grown;
		*cap = want;
	}
	/* The links to each connection follow the pollfd array. */
	links = (struct conn ***)(*p + *cap);
	(*p)[n++] = (struct pollfd){ .fd = k->wake[0], .events = POLLIN };
	for (struct listener *l = k->listeners; l; l = l->next, nl++)
		(*p)[n++] = (struct pollfd){ .fd = l->sock, .events = POLLIN };
	for (struct conn **l = &k->conns; *l; l = &(*l)->next) {
		links[n] = l;
		(*p)[n++] = (struct pollfd){ .fd = (*l)->sock, .events = POLLIN };
	}
	pthread_mutex_unlock(&k->mu);
	if (poll(*p, n, KEEPER_POLL_MS) < 0 && errno != EINTR)
		return false;
	if ((*p)[0].revents && read(k->wake[0], drain, sizeof(drain)) < 0)
		return false;
	/* From the last: closing one unlinks it, not those before. */
	for (size_t i = n; i-- > 1 + nl;)
		if ((*p)[i].revents)
			on_readable(k, links[i]);
	/* Listeners come and go under mu; only those still listed are
	 * accepted on (a retired one stays open until the next round). */
	pthread_mutex_lock(&k->mu);
	close_stale(k);
	for (size_t i = 1; i <= nl; i++) {
		if (!(*p)[i].revents)
			continue;
		for (struct listener *l = k->listeners; l; l = l->next)
			if (l->sock == (*p)[i].fd)
				on_accept(k, l);
	}
	pthread_mutex_unlock(&k->mu);
	return true;
}

static void *keeper_main(void *arg)
{
	struct keeper *k = arg;
	struct pollfd *p = NULL;
	size_t cap = 0;

	while (keeper_round(k, &p, &cap))
		;
	free(p);
	return NULL;
}

static void wake(struct keeper *k)
{
	if (write(k->wake[1], "x", 1) < 0 && errno != EAGAIN)
		log_warn("cannot wake the keeper thread", LOG_S("cause", strerror(errno)));
}

enum error_code keeper_new(struct keeper **out, struct error *err)
{
	struct keeper *k = calloc(1, sizeof(*k));

	if (!k)
		return error_set(err, ERR_NOMEM, "out of memory");
	pthread_mutex_init(&k->mu, NULL);
	k->wake[0] = k->wake[1] = -1;
	if (pipe2(k->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		error_set(err, ERR_IO, "pipe: %s", strerror(errno));
		keeper_free(k);
		return err->code;
	}
	if (pthread_create(&k->thread, NULL, keeper_main, k) != 0) {
		keeper_free(k);
		return error_set(err, ERR_NOMEM, "cannot start the keeper thread");
	}
	k->running = true;
	*out = k;
	return ERR_OK;
}

void keeper_free(struct keeper *k)
{
	if (!k)
		return;
	if (k->running) {
		pthread_mutex_lock(&k->mu);
		k->stopping = true;
		pthread_mutex_unlock(&k->mu);
		wake(k);
		pthread_join(k->thread, NULL);
	}
	while (k->conns)
		conn_close(k, &k->conns);
	while (k->entries) {
		struct entry *e = k->entries;

		k->entries = e->next;
		entry_free(e);
	}
	for (size_t i = 0; i < k->nunknown; i++)
		free(k->unknown[i].volume);
	/* The sockets stay: a plugin that restarts listens there again. */
	while (k->listeners) {
		struct listener *l = k->listeners;

		k->listeners = l->next;
		listener_free(l);
	}
	while (k->retired) {
		struct listener *l = k->retired;

		k->retired = l->next;
		listener_free(l);
	}
	if (k->wake[0] >= 0)
		close(k->wake[0]);
	if (k->wake[1] >= 0)
		close(k->wake[1]);
	pthread_mutex_destroy(&k->mu);
	free(k);
}

enum error_code keeper_listen(struct keeper *k, const char *volume, const char *socket_path,
			      struct error *err)
{
	struct listener *l;

	pthread_mutex_lock(&k->mu);
	for (l = k->listeners; l; l = l->next)
		if (strcmp(l->volume, volume) == 0)
			break;
	pthread_mutex_unlock(&k->mu);
	if (l)
		return ERR_OK;
	l = calloc(1, sizeof(*l));
	if (!l)
		return error_set(err, ERR_NOMEM, "out of memory");
	l->sock = -1;
	log_limiter_init(&l->full_log, KEEPER_FULL_LOG_MS, NULL, NULL);
	if (!(l->volume = strdup(volume)) || !(l->path = strdup(socket_path))) {
		listener_free(l);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	l->sock = fdchan_listen(socket_path, err);
	if (l->sock < 0) {
		listener_free(l);
		return error_wrap(err, "the keeper socket of volume '%s'", volume);
	}
	pthread_mutex_lock(&k->mu);
	l->next = k->listeners;
	k->listeners = l;
	pthread_mutex_unlock(&k->mu);
	wake(k);
	return ERR_OK;
}

enum error_code keeper_put(struct keeper *k, const char *volume, json_t *argv,
			   const char *init_state, int fd, uint64_t conn, struct error *err)
{
	struct entry *e;
	char *is = strdup(init_state ? init_state : "");
	int copy = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1;

	if (!is || (fd >= 0 && copy < 0)) {
		free(is);
		return error_set(err, ERR_NOMEM, "keep a copy of the FUSE connection of '%s': %s",
				 volume, strerror(errno ? errno : ENOMEM));
	}
	pthread_mutex_lock(&k->mu);
	e = find(k, volume);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->volume = strdup(volume))) {
			free(e);
			pthread_mutex_unlock(&k->mu);
			free(is);
			if (copy >= 0)
				close(copy);
			return error_set(err, ERR_NOMEM, "out of memory");
		}
		e->fd = -1;
		e->alone_since_ms = retry_now_ms();
		e->next = k->entries;
		k->entries = e;
	}
	json_decref(e->argv);
	e->argv = json_incref(argv);
	free(e->init_state);
	e->init_state = is;
	if (copy >= 0) {
		if (e->fd >= 0)
			close(e->fd);
		e->fd = copy;
		e->conn = conn;
		for (struct conn *c = k->conns; c; c = c->next)
			if (c->volume && strcmp(c->volume, volume) == 0 && c->conn != conn)
				send_fd(c, e, c->conn != 0);
	}
	pthread_mutex_unlock(&k->mu);
	return ERR_OK;
}

int keeper_dup_fd(struct keeper *k, const char *volume, uint64_t conn)
{
	struct entry *e;
	int fd = -1;

	pthread_mutex_lock(&k->mu);
	e = find(k, volume);
	if (e && e->fd >= 0 && e->conn == conn)
		fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 3);
	pthread_mutex_unlock(&k->mu);
	return fd;
}

void keeper_forget(struct keeper *k, const char *volume)
{
	struct entry **l;

	pthread_mutex_lock(&k->mu);
	for (l = &k->entries; *l; l = &(*l)->next) {
		struct entry *e = *l;

		if (strcmp(e->volume, volume) != 0)
			continue;
		*l = e->next;
		entry_free(e);
		break;
	}
	for (struct listener **ll = &k->listeners; *ll; ll = &(*ll)->next) {
		struct listener *gone = *ll;

		if (strcmp(gone->volume, volume) != 0)
			continue;
		*ll = gone->next;
		unlink(gone->path);
		gone->next = k->retired;
		k->retired = gone;
		break;
	}
	pthread_mutex_unlock(&k->mu);
	wake(k);
}

void keeper_status(struct keeper *k, const char *volume, struct keeper_status *st)
{
	struct entry *e;

	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&k->mu);
	e = find(k, volume);
	if (e) {
		st->known = true;
		st->holds_fd = e->fd >= 0;
		st->conn = e->fd >= 0 ? e->conn : 0;
		st->alone_since_ms = e->alone_since_ms;
	}
	for (struct conn *c = k->conns; c; c = c->next) {
		if (!c->volume || strcmp(c->volume, volume) != 0)
			continue;
		if (st->nsup < KEEPER_LISTED)
			st->sup[st->nsup++] = c->sup;
	}
	if (st->nsup)
		st->alone_since_ms = 0;
	pthread_mutex_unlock(&k->mu);
}

size_t keeper_take_unknown(struct keeper *k, char (*out)[KEEPER_NAME_MAX], size_t max)
{
	size_t n = 0, i = 0;

	pthread_mutex_lock(&k->mu);
	while (i < k->nunknown && n < max) {
		/* Known by now (its record loaded after the hello): keep it. */
		if (!find(k, k->unknown[i].volume))
			snprintf(out[n++], KEEPER_NAME_MAX, "%s", k->unknown[i].pod);
		free(k->unknown[i].volume);
		k->unknown[i] = k->unknown[--k->nunknown];
	}
	pthread_mutex_unlock(&k->mu);
	return n;
}
