/*
 * store_impl.h - what a store backend provides; private to store/.
 *
 * store.c validates arguments, counts calls in the shared stats and
 * dispatches through struct store_ops; a backend embeds struct store as its
 * first member and implements the operations. Backends fill err with the
 * backend-specific detail; store.c adds nothing but the counters.
 */
#ifndef GRANARY_STORE_STORE_IMPL_H
#define GRANARY_STORE_STORE_IMPL_H

#include <stdatomic.h>

#include "store/store.h"

struct store_ops {
	enum error_code (*put)(struct store *st, const char *key, const void *data,
			       size_t len, struct error *err);
	/* A backend provides get, get_stream or both; store.c builds the
	 * missing one from the other. */
	/* until_ms: the caller's deadline (retry_now_ms clock), 0 = none;
	 * a backend that can wait ends by then with ERR_TIMEOUT. */
	enum error_code (*get)(struct store *st, const char *key, uint64_t off,
			       size_t len, void *buf, size_t *got,
			       const char *etag, uint64_t until_ms, struct error *err);
	enum error_code (*get_stream)(struct store *st, const char *key,
				      uint64_t off, uint64_t len, store_sink_fn sink,
				      void *arg, const char *etag, uint64_t until_ms,
				      uint64_t *delivered, struct error *err);
	enum error_code (*head)(struct store *st, const char *key,
				struct store_object *info, struct error *err);
	enum error_code (*list)(struct store *st, const char *prefix,
				const char *delimiter, const char *token,
				unsigned max_keys, struct store_list_page *page,
				struct error *err);
	void (*free)(struct store *st);
};

struct store {
	const struct store_ops *ops;
	char *desc;                    /* "s3://bucket" / "file:///dir" */
	char *desc_at;                 /* desc and " at ENDPOINT"; NULL = desc */
	_Atomic uint64_t requests;     /* backends count attempts here */
	_Atomic uint64_t retries;
	_Atomic uint64_t bytes_read;
	_Atomic uint64_t errors;       /* store.c counts failed calls */
};

/* Backend constructors, called by store_open after the URI is split. */
enum error_code store_s3_open(const char *bucket, const struct store_config *cfg,
			      struct store **out, struct error *err);
enum error_code store_file_open(const char *dir, const struct store_config *cfg,
				struct store **out, struct error *err);

#endif
