/*
 * fdchan.c - JSON messages with an optional descriptor over SOCK_SEQPACKET.
 */
#include "csi/fdchan.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* Not in the kernel headers of this distribution yet (linux 6.9+). */
#define FDCHAN_NOTIFY_RESEND 7

/* The most descriptors one message can carry (the kernel's SCM_MAX_FD):
 * room for all, so that the kernel never drops one itself, which would
 * close it on the receiving thread. */
#define FDCHAN_MAX_FDS 253

/* A closer's stack: it only calls close(). */
#define FDCHAN_CLOSER_STACK (64 * 1024)

/*
 * The address of path. A path longer than sun_path (a state directory
 * with a 128-byte volume id in it) is reached through its directory:
 * *dirfd is that directory opened O_PATH and the address names the socket
 * as /proc/self/fd/N/NAME, which bind and connect resolve like any path.
 * The caller closes *dirfd (-1 when unused) once bound or connected.
 */
static enum error_code fill_addr(const char *path, struct sockaddr_un *a, int *dirfd,
				 struct error *err)
{
	const char *slash = strrchr(path, '/');
	char dir[4096];
	int n;

	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	*dirfd = -1;
	if (strlen(path) < sizeof(a->sun_path)) {
		strcpy(a->sun_path, path);
		return ERR_OK;
	}
	if (!slash || slash == path || (size_t)(slash - path) >= sizeof(dir) ||
	    strlen(slash) > sizeof(a->sun_path) - 32)
		return error_set(err, ERR_INVALID, "socket path '%s': its name is too long", path);
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	*dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*dirfd < 0)
		return error_set(err, error_from_errno(errno), "socket path '%s': open '%s': %s", path,
				 dir, strerror(errno));
	n = snprintf(a->sun_path, sizeof(a->sun_path), "/proc/self/fd/%d%s", *dirfd, slash);
	if (n < 0 || (size_t)n >= sizeof(a->sun_path)) {
		close(*dirfd);
		*dirfd = -1;
		return error_set(err, ERR_INVALID, "socket path '%s': its name is too long", path);
	}
	return ERR_OK;
}

int fdchan_listen(const char *path, struct error *err)
{
	struct sockaddr_un a;
	mode_t old;
	int s, rc, dirfd;

	if (fill_addr(path, &a, &dirfd, err) != ERR_OK)
		return -1;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0) {
		error_set(err, ERR_IO, "socket for '%s': %s", path, strerror(errno));
		if (dirfd >= 0)
			close(dirfd);
		return -1;
	}
	unlink(path);
	old = umask(0177);
	rc = bind(s, (struct sockaddr *)&a, sizeof(a));
	umask(old);
	if (rc != 0 || listen(s, 64) != 0) {
		error_set(err, error_from_errno(errno), "listen on '%s': %s", path, strerror(errno));
		close(s);
		s = -1;
	}
	if (dirfd >= 0)
		close(dirfd);
	return s;
}

int fdchan_connect(const char *path, struct error *err)
{
	/* A unix socket's connect waits for room in the listener's queue as
	 * its sends wait for room in the peer's: SO_SNDTIMEO bounds both. */
	struct timeval tv = { .tv_sec = FDCHAN_SEND_TIMEOUT_MS / 1000,
			      .tv_usec = (FDCHAN_SEND_TIMEOUT_MS % 1000) * 1000 };
	struct sockaddr_un a;
	int s, dirfd;

	if (fill_addr(path, &a, &dirfd, err) != ERR_OK)
		return -1;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0) {
		error_set(err, ERR_IO, "socket for '%s': %s", path, strerror(errno));
	} else if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
		error_set(err, ERR_IO, "socket for '%s': send timeout: %s", path, strerror(errno));
		close(s);
		s = -1;
	} else if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (errno == EAGAIN)
			error_set(err, ERR_TIMEOUT,
				  "connect to '%s': its queue of connections stayed full for %d ms "
				  "(nobody accepts them)",
				  path, FDCHAN_SEND_TIMEOUT_MS);
		else
			error_set(err, ERR_UNAVAILABLE, "connect to '%s': %s", path,
				  strerror(errno));
		close(s);
		s = -1;
	}
	if (dirfd >= 0)
		close(dirfd);
	return s;
}

enum error_code fdchan_send(int sock, json_t *msg, int fd, struct error *err)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr mh = { 0 };
	struct iovec iov;
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t len;
	ssize_t n;
	int saved;

	if (!text)
		return error_set(err, ERR_NOMEM, "out of memory");
	len = strlen(text);
	if (len > FDCHAN_MAX) {
		free(text);
		return error_set(err, ERR_INVALID, "message of %zu bytes is over %d", len, FDCHAN_MAX);
	}
	iov.iov_base = text;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		ctl.h.cmsg_level = SOL_SOCKET;
		ctl.h.cmsg_type = SCM_RIGHTS;
		ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(&ctl.h), &fd, sizeof(int));
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	saved = errno;
	free(text);
	if (n < 0 && saved == EAGAIN)
		return error_set(err, ERR_TIMEOUT,
				 "send: the peer's queue is full (it has stopped reading)");
	if (n != (ssize_t)len)
		return error_set(err, ERR_UNAVAILABLE, "send: %s",
				 n < 0 ? strerror(saved) : "short");
	return ERR_OK;
}

static void *closer_main(void *arg)
{
	close((int)(intptr_t)arg);
	return NULL;
}

void fdchan_close_async(int fd)
{
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (fd < 0)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, FDCHAN_CLOSER_STACK);
	rc = pthread_create(&t, &attr, closer_main, (void *)(intptr_t)fd);
	pthread_attr_destroy(&attr);
	/* No thread to spare: the caller waits, rather than keep the descriptor. */
	if (rc != 0)
		close(fd);
}

enum error_code fdchan_recv(int sock, json_t **msg, int *fd, int timeout_ms, struct error *err)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * FDCHAN_MAX_FDS)];
	} ctl;
	struct msghdr mh = { 0 };
	struct pollfd p = { .fd = sock, .events = POLLIN };
	struct iovec iov;
	json_error_t jerr;
	char *buf;
	ssize_t n;
	int rc;

	*msg = NULL;
	*fd = -1;
	do
		rc = poll(&p, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	if (rc == 0)
		return error_set(err, ERR_TIMEOUT, "no message within %d ms", timeout_ms);
	buf = malloc(FDCHAN_MAX + 1);
	if (!buf)
		return error_set(err, ERR_NOMEM, "out of memory");
	iov.iov_base = buf;
	iov.iov_len = FDCHAN_MAX;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		free(buf);
		return error_set(err, ERR_UNAVAILABLE, "%s",
				 n == 0 ? "the peer closed the connection" : strerror(errno));
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t count;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int got;

			memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*fd < 0)
				*fd = got;
			else
				fdchan_close_async(got); /* one descriptor a message */
		}
	}
	buf[n] = '\0';
	*msg = json_loadb(buf, (size_t)n, 0, &jerr);
	free(buf);
	if ((mh.msg_flags & MSG_TRUNC) || !*msg || !json_is_object(*msg)) {
		json_decref(*msg);
		*msg = NULL;
		fdchan_close_async(*fd);
		*fd = -1;
		return error_set(err, ERR_INVALID, "a message that is not a JSON object of at most %d bytes",
				 FDCHAN_MAX);
	}
	return ERR_OK;
}

int fdchan_fuse_resend(int fuse_fd)
{
	struct fuse_out_header h = { .len = sizeof(h), .error = FDCHAN_NOTIFY_RESEND };

	return write(fuse_fd, &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : -1;
}
