/*
 * tls.c - TLS settings checks and PEM loading (OpenSSL's parsers, so that a
 * wrong file is named at start rather than in a failed handshake later).
 */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "fileio.h"

static bool is_set(const char *s)
{
	return s && *s;
}

/* A path setting: empty, or absolute. key is prefix + name. */
static enum error_code check_path(const char *prefix, const char *name, const char *path,
				  struct error *err)
{
	char key[96];

	if (!is_set(path))
		return ERR_OK;
	snprintf(key, sizeof(key), "%s%s", prefix, name);
	return config_check_abs_path(key, path, err);
}

/* A certificate and its key: both set or both empty. */
static enum error_code check_pair(const char *prefix, const char *cert, const char *key,
				  struct error *err)
{
	if (is_set(cert) == is_set(key))
		return ERR_OK;
	return error_set(err, ERR_INVALID,
			 "key '%s%s': required with '%s%s' (a certificate and its key go together)",
			 prefix, is_set(cert) ? "key_file" : "cert_file", prefix,
			 is_set(cert) ? "cert_file" : "key_file");
}

enum error_code tls_server_check(const char *prefix, const struct tls_server_settings *s,
				 const char *client_ca_file, struct error *err)
{
	if (check_path(prefix, "cert_file", s->cert_file, err) != ERR_OK ||
	    check_path(prefix, "key_file", s->key_file, err) != ERR_OK ||
	    check_path(prefix, "client_ca_file", client_ca_file, err) != ERR_OK)
		return ERR_INVALID;
	if (check_pair(prefix, s->cert_file, s->key_file, err) != ERR_OK)
		return ERR_INVALID;
	if (is_set(client_ca_file) && !is_set(s->cert_file))
		return error_set(err, ERR_INVALID,
				 "key '%sclient_ca_file': needs '%scert_file' (client certificates are asked for only over TLS)",
				 prefix, prefix);
	return ERR_OK;
}

enum error_code tls_client_check(const char *prefix, const struct tls_client_settings *s,
				 struct error *err)
{
	char key[96];

	if (check_path(prefix, "ca_file", s->ca_file, err) != ERR_OK ||
	    check_path(prefix, "cert_file", s->cert_file, err) != ERR_OK ||
	    check_path(prefix, "key_file", s->key_file, err) != ERR_OK)
		return ERR_INVALID;
	if (check_pair(prefix, s->cert_file, s->key_file, err) != ERR_OK)
		return ERR_INVALID;
	if (!is_set(s->ca_file) && (is_set(s->cert_file) || is_set(s->server_name)))
		return error_set(err, ERR_INVALID,
				 "key '%s%s': needs '%sca_file' (TLS is on only with a CA to verify the server)",
				 prefix, is_set(s->cert_file) ? "cert_file" : "server_name", prefix);
	if (is_set(s->server_name)) {
		snprintf(key, sizeof(key), "%sserver_name", prefix);
		if (config_check_node_name(key, s->server_name, err) != ERR_OK)
			return ERR_INVALID;
	}
	return ERR_OK;
}

enum pem_kind { PEM_CERTS, PEM_KEY };

/* Whether pem (len bytes) holds at least one certificate, or a private
 * key; *key_out (may be NULL) gets the key. OpenSSL's error queue is
 * cleared either way: its text would be of no use to the reader. */
static bool pem_parse(const char *pem, size_t len, enum pem_kind kind, X509 **cert_out,
		      EVP_PKEY **key_out)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	bool ok = false;

	if (!bio)
		return false;
	if (kind == PEM_CERTS) {
		cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		ok = cert != NULL;
	} else {
		/* No passphrase callback: an encrypted key cannot be used by a daemon. */
		key = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
		ok = key != NULL;
	}
	BIO_free(bio);
	ERR_clear_error();
	if (cert_out)
		*cert_out = cert;
	else
		X509_free(cert);
	if (key_out)
		*key_out = key;
	else
		EVP_PKEY_free(key);
	return ok;
}

/* Reads the PEM file of setting prefix+name into *out after checking it
 * holds what kind says. */
static enum error_code pem_load(const char *prefix, const char *name, const char *path,
				enum pem_kind kind, char **out, X509 **cert, EVP_PKEY **key,
				struct error *err)
{
	char *data = NULL;
	size_t len = 0;

	*out = NULL;
	if (fileio_read_small(path, TLS_PEM_MAX, &data, &len, err) != ERR_OK)
		return error_wrap(err, "key '%s%s'", prefix, name);
	if (!pem_parse(data, len, kind, cert, key)) {
		if (kind == PEM_KEY)
			OPENSSL_cleanse(data, len);
		free(data);
		return error_set(err, ERR_INVALID, "key '%s%s': '%s' holds no PEM %s", prefix,
				 name, path,
				 kind == PEM_KEY ? "private key (an unencrypted one is needed)"
						 : "certificate");
	}
	*out = data;
	return ERR_OK;
}

/* Loads a certificate and its key and checks that they belong together. */
static enum error_code load_pair(const char *prefix, const char *cert_file,
				 const char *key_file, struct tls_material *m, struct error *err)
{
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	enum error_code rc = ERR_OK;

	if (pem_load(prefix, "cert_file", cert_file, PEM_CERTS, &m->cert, &cert, NULL, err) !=
		    ERR_OK ||
	    pem_load(prefix, "key_file", key_file, PEM_KEY, &m->key, NULL, &key, err) != ERR_OK) {
		rc = err ? err->code : ERR_INVALID;
		goto out;
	}
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		rc = error_set(err, ERR_INVALID,
			       "key '%skey_file': '%s' is not the private key of the certificate in '%s'",
			       prefix, key_file, cert_file);
	}
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

enum error_code tls_server_load(const char *prefix, const struct tls_server_settings *s,
				const char *client_ca_file, struct tls_material *out,
				struct error *err)
{
	memset(out, 0, sizeof(*out));
	if (tls_server_check(prefix, s, client_ca_file, err) != ERR_OK)
		return ERR_INVALID;
	if (!tls_server_enabled(s))
		return ERR_OK;
	if (load_pair(prefix, s->cert_file, s->key_file, out, err) != ERR_OK)
		return err ? err->code : ERR_INVALID;
	if (is_set(client_ca_file)) {
		if (pem_load(prefix, "client_ca_file", client_ca_file, PEM_CERTS, &out->ca, NULL,
			     NULL, err) != ERR_OK)
			return err ? err->code : ERR_INVALID;
	}
	return ERR_OK;
}

enum error_code tls_client_load(const char *prefix, const struct tls_client_settings *s,
				struct tls_material *out, struct error *err)
{
	memset(out, 0, sizeof(*out));
	if (!tls_client_enabled(s))
		return ERR_OK;
	if (tls_client_check(prefix, s, err) != ERR_OK)
		return ERR_INVALID;
	if (pem_load(prefix, "ca_file", s->ca_file, PEM_CERTS, &out->ca, NULL, NULL, err) != ERR_OK)
		return err ? err->code : ERR_INVALID;
	out->server_name = is_set(s->server_name) ? s->server_name : NULL;
	if (is_set(s->cert_file) &&
	    load_pair(prefix, s->cert_file, s->key_file, out, err) != ERR_OK)
		return err ? err->code : ERR_INVALID;
	return ERR_OK;
}

void tls_material_release(struct tls_material *m)
{
	if (!m)
		return;
	if (m->key)
		OPENSSL_cleanse(m->key, strlen(m->key));
	free(m->key);
	free(m->cert);
	free(m->ca);
	memset(m, 0, sizeof(*m));
}
