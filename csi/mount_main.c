/*
 * granary-mount - the supervisor that runs in each mount pod: it holds
 * the dataset's FUSE connection (a /dev/fuse descriptor the node plugin
 * mounted and hands over a unix socket, see csi/keeper.h) and runs
 * granary-fuse on it, starting a successor with --takeover when the
 * daemon dies, at once the first time and then with a doubling backoff
 * (restart_backoff_min .. restart_backoff_max, back to immediate after the
 * daemon ran for backoff_reset). It needs no privilege: the plugin did the
 * mount.
 *
 * It stays connected to the node plugin, reconnecting when the plugin
 * restarts, and gives the plugin its descriptor back when asked (a
 * restarted plugin holds none). So at every moment either the plugin or
 * this process holds each connection, and a restart of either one ends
 * no mount. Each daemon start and exit is reported to the plugin, which
 * shows them in its metrics and volume conditions. A connect or message
 * to the plugin waits at most FDCHAN_SEND_TIMEOUT_MS: a plugin that stops
 * accepting or reading is dropped and connected to again later, and the
 * daemon is supervised meanwhile.
 *
 * SIGTERM (the pod deleted): SIGTERM to the daemon, SIGKILL after the
 * grace period, exit 0. The connection lives on in the plugin.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/config.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/retry.h"
#include "csi/fdchan.h"

struct mount_settings {
	char *socket;
	char *volume;
	char *pod;
	char *template_hash;
	uint64_t backoff_min_ms, backoff_max_ms, backoff_reset_ms, stop_grace_ms;
	char *log_level;
};

static const struct config_field mount_fields[] = {
	{ "socket", CONFIG_STRING, offsetof(struct mount_settings, socket), "",
	  "the node plugin's keeper socket (absolute path)", 0, 0, NULL },
	{ "volume", CONFIG_STRING, offsetof(struct mount_settings, volume), "",
	  "the CSI volume id this pod serves", 0, 0, NULL },
	{ "pod", CONFIG_STRING, offsetof(struct mount_settings, pod), "",
	  "this pod's name, reported to the node plugin", 0, 0, NULL },
	{ "template", CONFIG_STRING, offsetof(struct mount_settings, template_hash), "",
	  "the hash of the pod template this pod was made from (upgrades compare it)", 0, 0, NULL },
	{ "restart_backoff_min", CONFIG_DURATION, offsetof(struct mount_settings, backoff_min_ms),
	  "100ms", "wait before a second successor within backoff_reset", 1, 60000, NULL },
	{ "restart_backoff_max", CONFIG_DURATION, offsetof(struct mount_settings, backoff_max_ms),
	  "10s", "longest wait between successors", 1, 600000, NULL },
	{ "backoff_reset", CONFIG_DURATION, offsetof(struct mount_settings, backoff_reset_ms),
	  "30s", "a daemon that ran this long is restarted at once", 1, 3600000, NULL },
	{ "stop_grace", CONFIG_DURATION, offsetof(struct mount_settings, stop_grace_ms), "20s",
	  "on SIGTERM, how long the daemon may take to stop before SIGKILL", 1, 600000, NULL },
	{ "log.level", CONFIG_STRING, offsetof(struct mount_settings, log_level), "info",
	  "debug, info, warn or error", 0, 0, NULL },
};

static const struct config_schema mount_schema = {
	.program = "granary-mount",
	.summary = "Granary mount pod supervisor: holds a dataset's FUSE connection and runs granary-fuse on it",
	.fields = mount_fields,
	.nfields = sizeof(mount_fields) / sizeof(mount_fields[0]),
};

#define CONNECT_BACKOFF_MIN_MS 100
#define CONNECT_BACKOFF_MAX_MS 2000
#define UNKNOWN_RETRY_MS 1000

struct sup {
	struct mount_settings s;
	int sock;                  /* to the plugin; -1 = not connected */
	int fd;                    /* the FUSE connection; -1 = none */
	uint64_t conn;             /* its id (the plugin's); 0 = none */
	json_t *argv;              /* the daemon's, without --mountpoint */
	char *init_state;
	pid_t daemon;              /* 0 = none running */
	uint64_t started_ms;
	unsigned starts;
	uint64_t backoff_ms;
	uint64_t next_start_ms;    /* 0 = none due */
	uint64_t next_connect_ms;
	uint64_t connect_backoff_ms;
	char last_exit[160];
	struct log_limiter lim;
};

static json_t *status_fields(const struct sup *m, const char *op)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:s}", "op", op, "daemon_pid", (json_int_t)m->daemon,
			 "restarts", (json_int_t)(m->starts ? m->starts - 1 : 0), "backoff_ms",
			 (json_int_t)(m->next_start_ms ? m->backoff_ms : 0), "last_exit", m->last_exit);
}

static void disconnect(struct sup *m, const char *why)
{
	if (m->sock < 0)
		return;
	log_warn("lost the node plugin; the mount goes on, reconnecting", LOG_S("volume", m->s.volume),
		 LOG_S("cause", why));
	close(m->sock);
	m->sock = -1;
	m->connect_backoff_ms = CONNECT_BACKOFF_MIN_MS;
	m->next_connect_ms = retry_now_ms() + m->connect_backoff_ms;
}

static void report(struct sup *m)
{
	json_t *msg;
	struct error err;

	if (m->sock < 0)
		return;
	msg = status_fields(m, "status");
	if (msg && fdchan_send(m->sock, msg, -1, &err) != ERR_OK)
		disconnect(m, err.msg);
	json_decref(msg);
}

static void try_connect(struct sup *m)
{
	enum error_code rc = ERR_NOMEM;
	struct error err;
	json_t *hello;
	int s = fdchan_connect(m->s.socket, &err);

	if (s < 0) {
		const char *what = err.code == ERR_TIMEOUT
					   ? "the node plugin's keeper accepts no connection; retrying"
					   : "the node plugin's keeper socket is not there yet";

		log_limited_warn(&m->lim, what, LOG_S("volume", m->s.volume),
				 LOG_S("cause", err.msg));
		m->connect_backoff_ms = m->connect_backoff_ms ? m->connect_backoff_ms * 2
							      : CONNECT_BACKOFF_MIN_MS;
		if (m->connect_backoff_ms > CONNECT_BACKOFF_MAX_MS)
			m->connect_backoff_ms = CONNECT_BACKOFF_MAX_MS;
		m->next_connect_ms = retry_now_ms() + m->connect_backoff_ms;
		return;
	}
	m->sock = s;
	hello = status_fields(m, "hello");
	if (!hello || json_object_set_new(hello, "volume", json_string(m->s.volume)) != 0 ||
	    json_object_set_new(hello, "pod", json_string(m->s.pod)) != 0 ||
	    json_object_set_new(hello, "template", json_string(m->s.template_hash)) != 0 ||
	    json_object_set_new(hello, "conn", json_integer(m->fd >= 0 ? (json_int_t)m->conn : 0)) != 0)
		error_set(&err, rc, "hello: out of memory");
	else
		rc = fdchan_send(s, hello, -1, &err);
	json_decref(hello);
	if (rc != ERR_OK) {
		disconnect(m, err.msg);
		return;
	}
	log_info("connected to the node plugin", LOG_S("volume", m->s.volume),
		 LOG_S("socket", m->s.socket), LOG_S("holds_connection", m->fd >= 0 ? "true" : "false"));
}

/* Runs granary-fuse on the held connection. */
static void start_daemon(struct sup *m)
{
	size_t n = json_array_size(m->argv), k = 0;
	char **argv = calloc(n + 5, sizeof(char *)), fdpath[32];
	bool takeover = m->init_state && *m->init_state && access(m->init_state, F_OK) == 0;
	pid_t pid;

	m->next_start_ms = 0;
	if (!argv || n == 0 || m->fd < 0) {
		free(argv);
		return;
	}
	snprintf(fdpath, sizeof(fdpath), "/dev/fd/%d", m->fd);
	for (size_t i = 0; i < n; i++)
		argv[k++] = (char *)json_string_value(json_array_get(m->argv, i));
	argv[k++] = "--mountpoint";
	argv[k++] = fdpath;
	if (takeover) {
		argv[k++] = "--takeover";
		argv[k++] = "true";
	}
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		fcntl(m->fd, F_SETFD, 0);
		execv(argv[0], argv);
		_exit(127);
	}
	free(argv);
	if (pid < 0) {
		snprintf(m->last_exit, sizeof(m->last_exit), "fork failed: %s", strerror(errno));
		m->next_start_ms = retry_now_ms() + m->s.backoff_max_ms;
		return;
	}
	m->daemon = pid;
	m->started_ms = retry_now_ms();
	m->starts++;
	log_info("granary-fuse started", LOG_S("volume", m->s.volume), LOG_I("pid", pid),
		 LOG_S("takeover", takeover ? "true" : "false"), LOG_U("restarts", m->starts - 1));
	report(m);
}

static void describe(int st, char *buf, size_t size)
{
	if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
		snprintf(buf, size, "exited with status 127 (granary-fuse could not be run)");
	else if (WIFEXITED(st))
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, size, "was killed by signal %d", WTERMSIG(st));
	else
		snprintf(buf, size, "ended");
}

/* Reaps every ended child (no zombie stays); schedules a successor. */
static void reap(struct sup *m, bool stopping)
{
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		uint64_t now = retry_now_ms();

		if (pid != m->daemon)
			continue;
		m->daemon = 0;
		describe(st, m->last_exit, sizeof(m->last_exit));
		if (stopping)
			continue;
		if (now - m->started_ms >= m->s.backoff_reset_ms)
			m->backoff_ms = 0;
		m->next_start_ms = now + m->backoff_ms;
		log_limited_warn(&m->lim, "granary-fuse ended; starting a successor on the held connection",
				 LOG_S("volume", m->s.volume), LOG_I("pid", pid),
				 LOG_S("how", m->last_exit), LOG_U("in_ms", m->backoff_ms));
		m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : m->s.backoff_min_ms;
		if (m->backoff_ms > m->s.backoff_max_ms)
			m->backoff_ms = m->s.backoff_max_ms;
		if (m->next_start_ms == 0)
			m->next_start_ms = 1;
		report(m);
	}
}

/* A connection from the plugin: a new one (fresh) replaces ours and its daemon. */
static void take_fd(struct sup *m, json_t *msg, int fd)
{
	json_t *argv = json_object_get(msg, "argv");
	const char *is = json_string_value(json_object_get(msg, "init_state"));
	json_int_t conn = json_integer_value(json_object_get(msg, "conn"));
	bool fresh = json_is_true(json_object_get(msg, "fresh"));

	if (!json_is_array(argv) || json_array_size(argv) == 0 || conn <= 0 || fd < 0) {
		log_warn("ignoring a malformed connection message from the node plugin",
			 LOG_S("volume", m->s.volume));
		if (fd >= 0)
			close(fd);
		return;
	}
	json_decref(m->argv);
	m->argv = json_incref(argv);
	free(m->init_state);
	m->init_state = strdup(is ? is : "");
	if (m->fd >= 0 && (uint64_t)conn == m->conn && !fresh) {
		close(fd);
		return;
	}
	if (m->daemon > 0) {
		log_info("a new FUSE connection: stopping the daemon of the old one",
			 LOG_S("volume", m->s.volume), LOG_I("pid", m->daemon));
		kill(m->daemon, SIGKILL);
	}
	if (m->fd >= 0)
		close(m->fd);
	m->fd = fd;
	m->conn = (uint64_t)conn;
	m->backoff_ms = 0;
	log_info("holding the FUSE connection", LOG_S("volume", m->s.volume), LOG_U("conn", m->conn));
	/* Else the old daemon's SIGCHLD wakes the loop, and reap() schedules
	 * the successor at once (backoff 0): nothing is due until then. */
	if (m->daemon == 0)
		start_daemon(m);
}

/* A send that fails drops the plugin: it asks again after the next hello. */
static void give_fd(struct sup *m)
{
	json_t *msg = json_pack("{s:s, s:I}", "op", "fd", "conn", (json_int_t)m->conn);
	struct error err;

	if (m->fd < 0)
		log_warn("the node plugin asked for the FUSE connection, but none is held",
			 LOG_S("volume", m->s.volume));
	else if (!msg)
		log_warn("cannot give the FUSE connection back to the node plugin",
			 LOG_S("volume", m->s.volume), LOG_S("cause", "out of memory"));
	else if (fdchan_send(m->sock, msg, m->fd, &err) != ERR_OK)
		disconnect(m, err.msg);
	else
		log_info("gave the FUSE connection back to the node plugin", LOG_S("volume", m->s.volume),
			 LOG_U("conn", m->conn));
	json_decref(msg);
}

static void on_message(struct sup *m)
{
	struct error err;
	const char *op;
	json_t *msg;
	int fd;

	if (fdchan_recv(m->sock, &msg, &fd, 0, &err) != ERR_OK) {
		if (err.code != ERR_TIMEOUT)
			disconnect(m, err.msg);
		return;
	}
	op = json_string_value(json_object_get(msg, "op"));
	if (op && strcmp(op, "fd") == 0) {
		take_fd(m, msg, fd);
		fd = -1;
	} else if (op && strcmp(op, "send") == 0) {
		give_fd(m);
	} else if (op && strcmp(op, "unknown") == 0) {
		log_limited_warn(&m->lim, "the node plugin has no such volume staged; asking again later",
				 LOG_S("volume", m->s.volume));
		close(m->sock);
		m->sock = -1;
		m->next_connect_ms = retry_now_ms() + UNKNOWN_RETRY_MS;
	}
	if (fd >= 0)
		close(fd);
	json_decref(msg);
}

static void stop(struct sup *m)
{
	uint64_t t0 = retry_now_ms();

	if (m->daemon > 0)
		kill(m->daemon, SIGTERM);
	while (m->daemon > 0) {
		reap(m, true);
		if (m->daemon > 0 && retry_now_ms() - t0 > m->s.stop_grace_ms) {
			log_warn("granary-fuse ignored SIGTERM; killing it", LOG_I("pid", m->daemon));
			kill(m->daemon, SIGKILL);
			t0 = retry_now_ms() + 60000;
		}
		retry_sleep_ms(20);
	}
	log_info("stopped; the node plugin keeps the connection", LOG_S("volume", m->s.volume));
}

static int run(struct sup *m)
{
	sigset_t set;
	int sfd;

	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		log_error("signalfd", LOG_S("cause", strerror(errno)));
		return 1;
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = sfd, .events = POLLIN }, { .fd = m->sock, .events = POLLIN } };
		uint64_t now = retry_now_ms(), due = now + 1000;
		struct signalfd_siginfo si;

		if (m->sock < 0 && m->next_connect_ms <= now)
			try_connect(m);
		if (m->next_start_ms && m->next_start_ms <= now && m->daemon == 0)
			start_daemon(m);
		if (m->sock < 0 && m->next_connect_ms < due)
			due = m->next_connect_ms;
		if (m->next_start_ms && m->next_start_ms < due)
			due = m->next_start_ms;
		p[1].fd = m->sock;
		if (poll(p, 2, due > now ? (int)(due - now) : 0) < 0 && errno != EINTR)
			break;
		while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo == SIGCHLD)
				continue;
			stop(m);
			close(sfd);
			return 0;
		}
		reap(m, false);
		if (m->sock >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			on_message(m);
	}
	close(sfd);
	return 1;
}

int main(int argc, char **argv)
{
	struct sup m = { .sock = -1, .fd = -1 };
	int rc;

	rc = daemon_start(&mount_schema, &m.s, argc, argv, NULL);
	if (rc >= 0)
		return rc;
	rc = 2;
	if (!m.s.socket || m.s.socket[0] != '/')
		fprintf(stderr, "granary-mount: key 'socket': must be an absolute path, got '%s'\n",
			m.s.socket ? m.s.socket : "");
	else if (!m.s.volume || !*m.s.volume)
		fprintf(stderr, "granary-mount: key 'volume': required\n");
	else if (m.s.backoff_min_ms > m.s.backoff_max_ms)
		fprintf(stderr, "granary-mount: key 'restart_backoff_min': above restart_backoff_max\n");
	else
		rc = -1;
	if (rc < 0) {
		log_limiter_init(&m.lim, 10000, NULL, NULL);
		log_info("granary-mount starting", LOG_S("volume", m.s.volume), LOG_S("pod", m.s.pod),
			 LOG_S("socket", m.s.socket));
		rc = run(&m);
		log_limiter_release(&m.lim);
	}
	json_decref(m.argv);
	free(m.init_state);
	config_release(&mount_schema, &m.s);
	return rc;
}
