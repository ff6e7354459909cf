/*
 * netaddr.c - parsing of "unix:///path" and "host:port" addresses.
 */
#include "common/netaddr.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* any_host: ":PORT" is allowed and leaves host empty (listen addresses). */
static enum error_code parse(const char *text, const char *what, bool any_host,
			     struct netaddr *out, struct error *err)
{
	const char *colon, *host = text;
	size_t hlen;
	char *end = NULL;
	long port;

	memset(out, 0, sizeof(*out));
	if (!text || !*text)
		return error_set(err, ERR_INVALID, "%s: empty address", what);
	if (strncmp(text, "unix://", 7) == 0) {
		const char *path = text + 7;

		if (path[0] != '/')
			return error_set(err, ERR_INVALID,
					 "%s '%s': unix socket path must be absolute (unix:///path)",
					 what, text);
		if (strlen(path) >= sizeof(out->path))
			return error_set(err, ERR_INVALID, "%s '%s': unix socket path longer than %zu bytes",
					 what, text, sizeof(out->path) - 1);
		out->is_unix = true;
		strcpy(out->path, path);
		return ERR_OK;
	}
	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (!close || close[1] != ':')
			return error_set(err, ERR_INVALID, "%s '%s': expected [ipv6]:port", what, text);
		host = text + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon || strchr(text, ':') != colon)
			return error_set(err, ERR_INVALID,
					 "%s '%s': expected host:port or unix:///path", what, text);
		hlen = (size_t)(colon - text);
	}
	if ((hlen == 0 && !(any_host && text[0] == ':')) || hlen >= sizeof(out->host))
		return error_set(err, ERR_INVALID, "%s '%s': missing or too long host", what, text);
	port = strtol(colon + 1, &end, 10);
	if (!colon[1] || *end || port < 1 || port > 65535)
		return error_set(err, ERR_INVALID, "%s '%s': port must be 1 to 65535", what, text);
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	out->port = (int)port;
	return ERR_OK;
}

enum error_code netaddr_parse(const char *text, const char *what,
			      struct netaddr *out, struct error *err)
{
	return parse(text, what, false, out, err);
}

enum error_code netaddr_parse_listen(const char *text, const char *what, struct netaddr *out,
				     struct error *err)
{
	return parse(text, what, true, out, err);
}

static enum error_code check_setting(const char *key, const char *text, bool any_host,
				     struct error *err)
{
	struct netaddr addr;

	if (!text || !*text)
		return error_set(err, ERR_INVALID, "key '%s': required (unix:///path or host:port)",
				 key);
	if (parse(text, "address", any_host, &addr, err) != ERR_OK)
		return error_wrap(err, "key '%s'", key);
	return ERR_OK;
}

enum error_code netaddr_check_setting(const char *key, const char *text,
				      struct error *err)
{
	return check_setting(key, text, false, err);
}

enum error_code netaddr_check_listen_setting(const char *key, const char *text,
					     struct error *err)
{
	return check_setting(key, text, true, err);
}

enum error_code netaddr_remove_stale_socket(const char *path, struct error *err)
{
	struct stat sb;

	if (lstat(path, &sb) < 0) {
		if (errno == ENOENT)
			return ERR_OK;
		return error_set(err, error_from_errno(errno), "stat '%s': %s", path,
				 strerror(errno));
	}
	if (!S_ISSOCK(sb.st_mode))
		return error_set(err, ERR_EXISTS, "'%s' exists and is not a socket", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return error_set(err, error_from_errno(errno), "remove '%s': %s", path,
				 strerror(errno));
	return ERR_OK;
}

static int listen_unix(const char *text, const char *what, const char *path, struct error *err)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, saved;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	/* A socket left by a previous run would make bind fail. */
	if (netaddr_remove_stale_socket(path, err) != ERR_OK) {
		error_wrap(err, "%s '%s'", what, text);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 &&
	    listen(fd, SOMAXCONN) == 0)
		return fd;
	saved = errno;
	if (fd >= 0)
		close(fd);
	error_set(err, saved == EADDRINUSE ? ERR_UNAVAILABLE : error_from_errno(saved),
		  "%s '%s': %s", what, text, strerror(saved));
	return -1;
}

static int listen_tcp(const char *text, const char *what, const struct netaddr *addr,
		      struct error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char port[8];
	int fd = -1, saved = 0, gai, one = 1;

	snprintf(port, sizeof(port), "%d", addr->port);
	gai = getaddrinfo(addr->host[0] ? addr->host : NULL, port, &hints, &res);
	if (gai != 0) {
		error_set(err, ERR_INVALID, "%s '%s': %s", what, text, gai_strerror(gai));
		return -1;
	}
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		error_set(err, saved == EADDRINUSE ? ERR_UNAVAILABLE : error_from_errno(saved),
			  "%s '%s': %s", what, text, strerror(saved));
	return fd;
}

int netaddr_listen(const char *text, const char *what, char *unix_path, size_t unix_size,
		   struct error *err)
{
	struct netaddr addr;
	int fd;

	if (unix_path && unix_size)
		unix_path[0] = '\0';
	if (netaddr_parse_listen(text, what, &addr, err) != ERR_OK)
		return -1;
	if (!addr.is_unix)
		return listen_tcp(text, what, &addr, err);
	fd = listen_unix(text, what, addr.path, err);
	if (fd >= 0 && unix_path && unix_size)
		snprintf(unix_path, unix_size, "%s", addr.path);
	return fd;
}
