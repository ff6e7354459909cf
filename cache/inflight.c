/*
 * inflight.c - the read-ahead's limit, raised or lowered by trying
 * (inflight.h).
 */
#include "cache/inflight.h"

void inflight_init(struct inflight_ctl *c, unsigned floor, unsigned cap)
{
	if (floor < 1)
		floor = 1;
	if (cap < floor)
		cap = floor;
	*c = (struct inflight_ctl){ .floor = floor, .cap = cap, .limit = floor, .backoff = 2 };
}

void inflight_start_at(struct inflight_ctl *c, unsigned start)
{
	c->limit = start < c->floor ? c->floor : start > c->cap ? c->cap : start;
	c->next_down = c->limit > c->floor;
}

static void set_limit(struct inflight_ctl *c, unsigned limit)
{
	c->limit = limit;
	c->settle = 1;
	c->last_rate = 0;
}

/* The limit a try from limit goes to, or limit when there is none to make. */
static unsigned try_target(const struct inflight_ctl *c, bool queued)
{
	if (c->next_down && c->limit > c->floor) {
		unsigned to = c->limit - c->limit / 3;

		return to < c->floor ? c->floor : to;
	}
	if (queued && c->limit < c->cap)
		return c->cap - c->limit < c->limit ? c->cap : 2 * c->limit;
	return c->limit;
}

/* Whether two windows' rates are within INFLIGHT_STEADY_PCT % of each
 * other (and not 0). */
static bool within(double a, double b)
{
	return a > 0 && b > 0 && a * 100 <= b * (100 + INFLIGHT_STEADY_PCT) &&
	       b * 100 <= a * (100 + INFLIGHT_STEADY_PCT);
}

/* Both windows at from are in: keep to, or stay. */
static void decide(struct inflight_ctl *c, double back_rate)
{
	const bool up = c->to > c->from;
	const double base = (c->from_rate + back_rate) / 2;
	const double pct = up ? 100 + INFLIGHT_GAIN_PCT : 100 - INFLIGHT_LOSS_PCT;

	c->phase = INFLIGHT_IDLE;
	if (!within(back_rate, c->from_rate)) {
		/* The rate moved under the try (an epoch began or ended):
		 * it tells nothing; stay, and try again later. */
		c->last_rate = back_rate;
		c->hold = 2;
		return;
	}
	if (c->to_rate * 100 >= base * pct) {
		/* Paid (or, lower, cost nothing): go there, and the next try
		 * in the same direction once the rate is steady. */
		set_limit(c, c->to);
		c->backoff = 2;
		c->hold = 0;
		c->next_down = !up;
	} else {
		c->last_rate = back_rate;
		c->hold = c->backoff;
		c->backoff = c->backoff * 2 > INFLIGHT_HOLD_MAX ? INFLIGHT_HOLD_MAX : c->backoff * 2;
		c->next_down = up;
	}
}

unsigned inflight_window(struct inflight_ctl *c, double rate, bool queued)
{
	bool steady;
	unsigned to;

	if (c->settle > 0) {
		c->settle--;
		return c->limit;
	}
	switch (c->phase) {
	case INFLIGHT_TRYING:
		c->to_rate = rate;
		c->phase = INFLIGHT_BACK;
		set_limit(c, c->from);
		return c->limit;
	case INFLIGHT_BACK:
		decide(c, rate);
		return c->limit;
	case INFLIGHT_IDLE:
		break;
	}
	steady = within(rate, c->last_rate);
	c->last_rate = rate;
	if (c->hold > 0) {
		c->hold--;
		return c->limit;
	}
	to = try_target(c, queued);
	if (!steady || to == c->limit)
		return c->limit;
	c->phase = INFLIGHT_TRYING;
	c->from = c->limit;
	c->to = to;
	c->from_rate = rate;
	set_limit(c, to);
	return c->limit;
}
