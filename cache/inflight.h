/*
 * inflight.h - how many read-ahead fetches to run at once, found by
 * trying.
 *
 * With the store a round trip away, each small file in flight waits that
 * long, so more at once bring more files per second (64 at 50 ms allow
 * 1,280); with the store on the node's own CPUs, more at once only cost
 * CPU. The store's latency cannot tell the two apart (a saturated local
 * store answers slowly too), so the limit follows what it buys, measured
 * in windows of INFLIGHT_WINDOW_MS (blocks fetched per second):
 *
 *   - A try starts only from a steady rate (the last two windows within
 *     INFLIGHT_STEADY_PCT % of each other), so that an epoch's ramp is not
 *     taken for the try's gain. It goes up by half while fetches wait in
 *     the queue for the limit, or, above the floor after a rise that did
 *     not pay or a fall that did, down by a third.
 *   - It is measured between two windows at the limit it left (A, B, A),
 *     so that a trend over the three does not decide it: a rise is kept
 *     if it brought INFLIGHT_GAIN_PCT % more than their mean, a fall if
 *     it lost under INFLIGHT_LOSS_PCT %.
 *   - After a try that is not kept the next waits twice as many windows
 *     as the last one did (2, 4, ... INFLIGHT_HOLD_MAX); one that is kept
 *     lets the next come as soon as the rate is steady again.
 *   - After each change one window passes unmeasured while the fetches in
 *     flight come to the new limit.
 *
 * Not thread-safe: the fetcher calls it under its own mutex.
 */
#ifndef GRANARY_CACHE_INFLIGHT_H
#define GRANARY_CACHE_INFLIGHT_H

#include <stdbool.h>

#define INFLIGHT_WINDOW_MS 300
#define INFLIGHT_STEADY_PCT 10
#define INFLIGHT_GAIN_PCT 15
#define INFLIGHT_LOSS_PCT 3
#define INFLIGHT_HOLD_MAX 64 /* windows: about 19 s */

enum inflight_phase {
	INFLIGHT_IDLE,   /* at limit, no try under way */
	INFLIGHT_TRYING, /* at the tried limit */
	INFLIGHT_BACK,   /* back at the limit before the try, measuring it again */
};

struct inflight_ctl {
	unsigned floor, cap;       /* immutable: the limit stays within them */
	unsigned limit;            /* now */
	enum inflight_phase phase;
	unsigned from, to;         /* the try: the limit it left, the one tried */
	double last_rate;          /* the last window's at limit (0: none yet) */
	double from_rate, to_rate; /* the try's first window at from; at to */
	bool next_down;            /* the next try lowers the limit */
	unsigned settle;           /* windows left unmeasured after a change */
	unsigned hold;             /* windows before the next try */
	unsigned backoff;          /* hold after the next try not kept */
};

/* Starts at floor (at least 1); cap below floor is taken as floor (a
 * fixed limit). */
void inflight_init(struct inflight_ctl *c, unsigned floor, unsigned cap);

/* Moves the limit to start (within floor and cap), before the first
 * window: above the floor, the first try is a fall, so a limit begun
 * high stays there where fewer lose blocks per second (a far store) and
 * comes down where they lose nothing (a store on the node's CPUs). */
void inflight_start_at(struct inflight_ctl *c, unsigned start);

/*
 * One window's outcome: blocks fetched per second, and whether fetches
 * waited in the queue for the limit. Returns the limit from now on.
 */
unsigned inflight_window(struct inflight_ctl *c, double rate, bool queued);

#endif
