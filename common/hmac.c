/*
 * hmac.c - HMAC-SHA256 through one OpenSSL context per thread (hmac.h).
 */
#include "common/hmac.h"

#include <pthread.h>

#include <openssl/core_names.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MAC *mac;
static pthread_key_t ctx_key;
static bool ready;

static void ctx_free(void *ctx)
{
	EVP_MAC_CTX_free(ctx);
}

static void init(void)
{
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	ready = mac && pthread_key_create(&ctx_key, ctx_free) == 0;
}

bool hmac_sha256_ready(void)
{
	pthread_once(&once, init);
	return ready;
}

static EVP_MAC_CTX *thread_ctx(void)
{
	EVP_MAC_CTX *ctx = pthread_getspecific(ctx_key);
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};

	if (ctx)
		return ctx;
	ctx = EVP_MAC_CTX_new(mac);
	if (!ctx)
		return NULL;
	if (EVP_MAC_CTX_set_params(ctx, params) != 1 || pthread_setspecific(ctx_key, ctx) != 0) {
		EVP_MAC_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

EVP_MAC_CTX *hmac_sha256_begin(const void *key, size_t keylen)
{
	EVP_MAC_CTX *ctx;

	if (!hmac_sha256_ready())
		return NULL;
	ctx = thread_ctx();
	/* A new key and no parameters: the digest stays SHA-256, nothing is
	 * looked up again. */
	return ctx && EVP_MAC_init(ctx, key, keylen, NULL) == 1 ? ctx : NULL;
}

bool hmac_sha256_end(EVP_MAC_CTX *ctx, unsigned char out[HMAC_SHA256_LEN])
{
	size_t len = 0;

	return EVP_MAC_final(ctx, out, &len, HMAC_SHA256_LEN) == 1 && len == HMAC_SHA256_LEN;
}
