/*
 * accel_sweep.c - the accelerator sweep's counts and stop rule (see
 * accel_sweep.h).
 */
#include "bench/accel_sweep.h"

void accel_sweep_init(struct accel_sweep *s, int64_t max)
{
	s->max = max < 1 ? 1 : max;
	s->sustained = 0;
	s->failed = 0;
}

int64_t accel_sweep_next(const struct accel_sweep *s)
{
	if (s->failed == 0) {
		if (s->sustained == 0)
			return 1;
		if (s->sustained >= s->max)
			return 0;
		return s->sustained > s->max / 2 ? s->max : 2 * s->sustained;
	}
	if (s->failed - s->sustained <= 1)
		return 0;
	return s->sustained + (s->failed - s->sustained) / 2;
}

void accel_sweep_record(struct accel_sweep *s, int64_t n, bool held)
{
	if (held) {
		if (n > s->sustained)
			s->sustained = n;
	} else if (s->failed == 0 || n < s->failed) {
		s->failed = n;
	}
}

bool accel_sweep_bound_reached(const struct accel_sweep *s)
{
	return s->failed == 0 && s->sustained >= s->max;
}
