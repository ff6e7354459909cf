/*
 * netaddr.c - parsing of "unix:///path" and "host:port" addresses.
 */
#include "common/netaddr.h"

#include <stdlib.h>
#include <string.h>

enum error_code netaddr_parse(const char *text, const char *what,
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
	if (hlen == 0 || hlen >= sizeof(out->host))
		return error_set(err, ERR_INVALID, "%s '%s': missing or too long host", what, text);
	port = strtol(colon + 1, &end, 10);
	if (!colon[1] || *end || port < 1 || port > 65535)
		return error_set(err, ERR_INVALID, "%s '%s': port must be 1 to 65535", what, text);
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	out->port = (int)port;
	return ERR_OK;
}

enum error_code netaddr_check_setting(const char *key, const char *text,
				      struct error *err)
{
	struct netaddr addr;

	if (!text || !*text)
		return error_set(err, ERR_INVALID, "key '%s': required (unix:///path or host:port)",
				 key);
	if (netaddr_parse(text, "address", &addr, err) != ERR_OK)
		return error_wrap(err, "key '%s'", key);
	return ERR_OK;
}
