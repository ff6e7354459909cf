/*
 * tls.h - the TLS settings every daemon shares and the loading of the PEM
 * files they name, so that granary-meta's gRPC and the workers' HTTP are
 * configured, checked and reported the same way (docs/security.md, "TLS").
 *
 * Two halves of a connection, two setting groups:
 *
 *   struct tls_server_settings  a listener's certificate and key
 *                               ("tls.cert_file", "tls.key_file"); a server
 *                               that takes mutual TLS adds the CA its
 *                               clients' certificates must chain to
 *                               (TLS_CLIENT_CA_FIELD, "tls.client_ca_file");
 *   struct tls_client_settings  the CA a server's certificate must chain to,
 *                               the name it must carry, and for mutual TLS
 *                               the client's own certificate and key
 *                               ("meta.tls.ca_file", "worker.tls.ca_file").
 *
 * A daemon embeds them in its settings struct and puts TLS_SERVER_FIELDS /
 * TLS_CLIENT_FIELDS into its config_field table with the key prefix. Empty
 * files mean plaintext, the default.
 *
 * The files are read once, by tls_server_load / tls_client_load, when the
 * daemon starts: a rotated Secret takes effect at the next restart. Every
 * file is parsed with OpenSSL before a server or channel sees it, so a
 * wrong file fails the start with the setting and the path named:
 *   "key 'tls.key_file': '/etc/tls/tls.key' holds no PEM private key".
 * No message ever quotes a file's contents. Key material is wiped from
 * memory when released.
 */
#ifndef GRANARY_COMMON_TLS_H
#define GRANARY_COMMON_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "error.h"

/* Largest PEM file read: a few certificates of a chain, or one key. */
#define TLS_PEM_MAX (256u << 10)

struct tls_server_settings {
	char *cert_file; /* PEM chain, leaf first; "" = plaintext */
	char *key_file;  /* PEM private key of cert_file */
};

struct tls_client_settings {
	char *ca_file;     /* "" = plaintext */
	char *server_name; /* the DNS name the server's certificate must carry */
	char *cert_file;   /* client certificate for mutual TLS; "" = none */
	char *key_file;
};

#define TLS_SERVER_FIELDS(type, m, prefix, what)                                              \
	{ prefix "cert_file", CONFIG_STRING, offsetof(type, m.cert_file), "",                    \
	  "PEM certificate (chain, leaf first) " what " serves TLS with (absolute; empty: "      \
	  "plaintext)", 0, 0, NULL },                                                            \
	{ prefix "key_file", CONFIG_STRING, offsetof(type, m.key_file), "",                      \
	  "PEM private key of " prefix "cert_file (absolute)", 0, 0, NULL }

/* Mutual TLS, for a server that takes it (granary-meta): member is a
 * char * of the daemon's settings. */
#define TLS_CLIENT_CA_FIELD(type, member, prefix)                                             \
	{ prefix "client_ca_file", CONFIG_STRING, offsetof(type, member), "",                    \
	  "PEM CA: when set, every client must present a certificate it signed (mutual TLS)",   \
	  0, 0, NULL }

#define TLS_CLIENT_FIELDS(type, m, prefix, what)                                              \
	{ prefix "ca_file", CONFIG_STRING, offsetof(type, m.ca_file), "",                        \
	  "PEM CA that " what "'s certificate must chain to: when set, calls use TLS and "       \
	  "verify the server (absolute; empty: plaintext)", 0, 0, NULL },                        \
	{ prefix "server_name", CONFIG_STRING, offsetof(type, m.server_name), "",                \
	  "DNS name " what "'s certificate must carry (empty: the host of the address)",         \
	  0, 0, NULL },                                                                          \
	{ prefix "cert_file", CONFIG_STRING, offsetof(type, m.cert_file), "",                    \
	  "PEM client certificate for mutual TLS with " what " (empty: none)", 0, 0, NULL },     \
	{ prefix "key_file", CONFIG_STRING, offsetof(type, m.key_file), "",                      \
	  "PEM private key of " prefix "cert_file", 0, 0, NULL }

static inline bool tls_server_enabled(const struct tls_server_settings *s)
{
	return s->cert_file && *s->cert_file;
}

static inline bool tls_client_enabled(const struct tls_client_settings *s)
{
	return s->ca_file && *s->ca_file;
}

/*
 * Checks what the table cannot, with prefix the settings' key prefix
 * ("tls.", "meta.tls."): paths absolute; a certificate and its key both
 * set or both empty; client_ca_file (NULL or "": none) only with a
 * certificate; a client
 * certificate or a server name only with a CA; server_name a DNS name.
 * ERR_INVALID naming the key.
 */
enum error_code tls_server_check(const char *prefix, const struct tls_server_settings *s,
				 const char *client_ca_file, struct error *err);
enum error_code tls_client_check(const char *prefix, const struct tls_client_settings *s,
				 struct error *err);

/*
 * PEM material as read from the files, NUL-terminated (what gRPC,
 * libmicrohttpd and curl's CAINFO_BLOB take), so that every process uses
 * what it checked at start. NULL where the setting is empty. Owned; wiped
 * and freed by tls_material_release.
 */
struct tls_material {
	char *cert, *key, *ca;
	const char *server_name; /* borrowed from the settings; NULL when empty */
};

/*
 * Reads and parses the files of enabled settings into *out (zeroed first;
 * a server's client_ca_file becomes out->ca;
 * disabled settings leave it empty, ERR_OK). A file that cannot be read,
 * is over TLS_PEM_MAX, or holds no certificate (no private key) is
 * ERR_INVALID naming the key and the path; a key that does not belong to
 * the certificate too. Release *out with tls_material_release in any case.
 */
enum error_code tls_server_load(const char *prefix, const struct tls_server_settings *s,
				const char *client_ca_file, struct tls_material *out,
				struct error *err);
enum error_code tls_client_load(const char *prefix, const struct tls_client_settings *s,
				struct tls_material *out, struct error *err);

/* Whether m holds a certificate (server) or a CA (client): TLS is on. */
static inline bool tls_material_server(const struct tls_material *m)
{
	return m && m->cert;
}

static inline bool tls_material_client(const struct tls_material *m)
{
	return m && m->ca;
}

void tls_material_release(struct tls_material *m);

#endif
