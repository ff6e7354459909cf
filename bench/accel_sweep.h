/*
 * accel_sweep.h - which accelerator counts the emulation measures, and when
 * it stops (bench/accel_emul.c).
 *
 * MLPerf Storage reports the largest number of emulated accelerators a
 * storage system keeps at or above an utilisation bar. The sweep finds it
 * in few measurements: it doubles the count (1, 2, 4, ...) until a count
 * falls below the bar, then bisects between the largest count that held and
 * the smallest that did not, until they are adjacent. It assumes that
 * utilisation does not rise with more accelerators (true up to noise). It
 * stops at an upper bound too, and says so: the system then sustains at
 * least that many, and the figure is a floor.
 *
 * Pure logic, no I/O; not thread-safe (one sweep per caller).
 */
#ifndef GRANARY_BENCH_ACCEL_SWEEP_H
#define GRANARY_BENCH_ACCEL_SWEEP_H

#include <stdbool.h>
#include <stdint.h>

struct accel_sweep {
	int64_t max;       /* the upper bound, >= 1 */
	int64_t sustained; /* largest count measured at or above the bar; 0: none */
	int64_t failed;    /* smallest count measured below it; 0: none */
};

/* Starts a sweep bounded by max accelerators (values below 1 count as 1). */
void accel_sweep_init(struct accel_sweep *s, int64_t max);

/* The next count to measure, or 0 when the sweep is over: the largest
 * sustained count is then s->sustained (0 if even one accelerator fell
 * below the bar). */
int64_t accel_sweep_next(const struct accel_sweep *s);

/* Records that n accelerators held the bar (held) or not. */
void accel_sweep_record(struct accel_sweep *s, int64_t n, bool held);

/* Whether the sweep ended at its upper bound with the bar still held: the
 * result is then a floor, not the system's limit. */
bool accel_sweep_bound_reached(const struct accel_sweep *s);

#endif
