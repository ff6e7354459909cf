/*
 * dsqueue.c - the Dataset controller's objects waiting for another look
 * (see dsqueue.h).
 */
#include "meta/dsqueue.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

/* keys: "N/D" -> {"due": ms, "delay": ms, "running": bool} */
struct dsqueue {
	json_t *keys;
};

struct entry {
	uint64_t due_ms;    /* 0: no look due */
	uint64_t delay_ms;  /* the backoff reached; 0: none */
	bool running;       /* a job runs for it */
};

static struct entry get(const struct dsqueue *q, const char *key)
{
	json_t *v = json_object_get(q->keys, key);

	return (struct entry){
		.due_ms = (uint64_t)json_integer_value(json_object_get(v, "due")),
		.delay_ms = (uint64_t)json_integer_value(json_object_get(v, "delay")),
		.running = json_is_true(json_object_get(v, "running")),
	};
}

/* Keeps e as key's state; a key that waits for nothing goes. Only a new
 * key allocates: false when out of memory (it is then not kept). */
static bool put(struct dsqueue *q, const char *key, const struct entry *e)
{
	json_t *v = json_object_get(q->keys, key);

	if (!e->due_ms && !e->delay_ms && !e->running) {
		json_object_del(q->keys, key);
		return true;
	}
	if (v) {
		json_integer_set(json_object_get(v, "due"), (json_int_t)e->due_ms);
		json_integer_set(json_object_get(v, "delay"), (json_int_t)e->delay_ms);
		json_object_set(v, "running", json_boolean(e->running));
		return true;
	}
	return json_object_set_new(q->keys, key,
				   json_pack("{s:I, s:I, s:b}", "due", (json_int_t)e->due_ms,
					     "delay", (json_int_t)e->delay_ms, "running",
					     e->running)) == 0;
}

struct dsqueue *dsqueue_new(void)
{
	struct dsqueue *q = calloc(1, sizeof(*q));

	if (q && !(q->keys = json_object())) {
		free(q);
		q = NULL;
	}
	return q;
}

void dsqueue_free(struct dsqueue *q)
{
	if (!q)
		return;
	json_decref(q->keys);
	free(q);
}

uint64_t dsqueue_again(struct dsqueue *q, const char *key, uint64_t now_ms, uint64_t delay_ms,
		       bool backoff)
{
	struct entry e = get(q, key);

	if (backoff) {
		e.delay_ms = e.delay_ms ? e.delay_ms * 2 : DSQUEUE_RETRY_FIRST_MS;
		if (e.delay_ms > DSQUEUE_RETRY_MAX_MS)
			e.delay_ms = DSQUEUE_RETRY_MAX_MS;
		delay_ms = e.delay_ms;
	}
	e.due_ms = now_ms + delay_ms;
	return put(q, key, &e) ? e.due_ms : 0;
}

void dsqueue_settled(struct dsqueue *q, const char *key)
{
	struct entry e = get(q, key);

	e.delay_ms = 0;
	put(q, key, &e);
}

bool dsqueue_backing_off(const struct dsqueue *q, const char *key, uint64_t now_ms)
{
	struct entry e = get(q, key);

	return e.delay_ms && e.due_ms > now_ms;
}

bool dsqueue_running(const struct dsqueue *q, const char *key)
{
	return get(q, key).running;
}

bool dsqueue_start(struct dsqueue *q, const char *key)
{
	struct entry e = get(q, key);

	e.running = true;
	e.due_ms = 0;
	return put(q, key, &e);
}

void dsqueue_finished(struct dsqueue *q, const char *key, uint64_t now_ms)
{
	struct entry e = get(q, key);

	e.running = false;
	if (!e.due_ms)
		e.due_ms = now_ms;
	put(q, key, &e);
}

size_t dsqueue_take_due(struct dsqueue *q, uint64_t now_ms, char (*out)[DSQUEUE_KEY_LEN],
			size_t max, uint64_t *next_ms)
{
	const char *key;
	json_t *v, *tmp;
	size_t n = 0;

	*next_ms = 0;
	json_object_foreach_safe(q->keys, tmp, key, v) {
		struct entry e = get(q, key);

		if (e.running || !e.due_ms)
			continue;
		if (e.due_ms <= now_ms && n < max) {
			snprintf(out[n++], DSQUEUE_KEY_LEN, "%s", key);
			e.due_ms = 0;
			put(q, key, &e);
		} else if (!*next_ms || e.due_ms < *next_ms) {
			*next_ms = e.due_ms;
		}
	}
	return n;
}

void dsqueue_forget(struct dsqueue *q, const char *key)
{
	if (!dsqueue_running(q, key))
		json_object_del(q->keys, key);
}
