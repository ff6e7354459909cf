/*
 * stopper.c - waits that a stop ends (see stopper.h).
 */
#include "meta/stopper.h"

#include "common/retry.h"

void stopper_init(struct stopper *s)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	s->stopped = false;
}

void stopper_release(struct stopper *s)
{
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->mu);
}

void stopper_stop(struct stopper *s)
{
	pthread_mutex_lock(&s->mu);
	s->stopped = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

bool stopper_stopped(struct stopper *s)
{
	bool stopped;

	pthread_mutex_lock(&s->mu);
	stopped = s->stopped;
	pthread_mutex_unlock(&s->mu);
	return stopped;
}

bool stopper_wait(struct stopper *s, uint64_t ms)
{
	struct timespec until = retry_deadline_ts(CLOCK_MONOTONIC, ms);
	bool stopped;

	pthread_mutex_lock(&s->mu);
	/* Until the deadline: a wake-up without a stop waits again. */
	while (!s->stopped && pthread_cond_timedwait(&s->cond, &s->mu, &until) == 0)
		;
	stopped = s->stopped;
	pthread_mutex_unlock(&s->mu);
	return stopped;
}
