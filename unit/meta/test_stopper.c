/*
 * test_stopper.c - waits that a stop ends (meta/stopper.c): a wait lasts
 * its time unless stopped, a stop ends a wait in progress at once, and
 * every wait after a stop ends at once.
 */
#include <pthread.h>

#include "common/retry.h"
#include "meta/stopper.h"
#include "unit/check_main.h"

START_TEST(test_stopper_wait_lasts_its_time)
{
	struct stopper s;
	uint64_t t0 = retry_now_ms();

	stopper_init(&s);
	ck_assert(!stopper_wait(&s, 200));
	ck_assert_uint_ge(retry_now_ms() - t0, 200);
	ck_assert(!stopper_stopped(&s));
	stopper_release(&s);
}
END_TEST

static void *wait_long(void *arg)
{
	return (void *)(uintptr_t)stopper_wait(arg, 60000);
}

START_TEST(test_stopper_stop_ends_a_wait_at_once)
{
	struct stopper s;
	pthread_t t;
	void *stopped = NULL;
	uint64_t t0;

	stopper_init(&s);
	ck_assert_int_eq(pthread_create(&t, NULL, wait_long, &s), 0);
	t0 = retry_now_ms();
	stopper_stop(&s);
	pthread_join(t, &stopped);
	ck_assert(stopped);
	ck_assert_msg(retry_now_ms() - t0 < 1000, "a wait of 60 s ended %llu ms after the stop",
		      (unsigned long long)(retry_now_ms() - t0));
	/* Stopped for good: the next wait ends at once. */
	t0 = retry_now_ms();
	ck_assert(stopper_wait(&s, 60000));
	ck_assert_uint_lt(retry_now_ms() - t0, 1000);
	ck_assert(stopper_stopped(&s));
	stopper_release(&s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("stopper");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_stopper_wait_lasts_its_time);
	tcase_add_test(tc, test_stopper_stop_ends_a_wait_at_once);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
