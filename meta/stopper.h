/*
 * stopper.h - a stop that ends the waits of a controller's thread at once:
 * the Dataset controller's and the cache gate's backoffs after a failed
 * call to the apiserver (up to 30 s each) end the moment the controller is
 * stopped (SIGTERM: meta/main.c stops them as it winds down), so that the
 * leader gives up its Lease without sitting out a backoff first.
 *
 * Thread-safe: one thread (or several) waits, another stops. A monotonic
 * condition variable, so a change of the wall clock moves no wait.
 */
#ifndef GRANARY_META_STOPPER_H
#define GRANARY_META_STOPPER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct stopper {
	pthread_mutex_t mu;
	pthread_cond_t cond;    /* stopped was set */
	bool stopped;           /* protected by mu */
};

/* Not stopped yet. Release with stopper_release once no thread waits. */
void stopper_init(struct stopper *s);
void stopper_release(struct stopper *s);

/* Stops: every wait ends now, and every later one at once. */
void stopper_stop(struct stopper *s);

bool stopper_stopped(struct stopper *s);

/* Waits ms, or less when stopped meanwhile: true when stopped. */
bool stopper_wait(struct stopper *s, uint64_t ms);

#endif
