/*
 * test_daemon.c - the shared start-up: arguments a daemon does not take,
 * the log level, and the one form of a start-up error.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/daemon.h"
#include "common/log.h"
#include "unit/check_main.h"

struct settings {
	char *level;
	char *name;
};

static const struct config_field fields[] = {
	{ "log.level", CONFIG_STRING, offsetof(struct settings, level), "info", "log level", 0, 0,
	  NULL },
	{ "name", CONFIG_STRING, offsetof(struct settings, name), "x", "a name", 0, 0, NULL },
};

static const struct config_schema schema = {
	.program = "granary-test",
	.summary = "A daemon for testing the start-up.",
	.fields = fields,
	.nfields = sizeof(fields) / sizeof(fields[0]),
};

/* stderr, caught in a temporary file. */
struct caught {
	char path[32];
	int fd, saved;
};

static void catch_stderr(struct caught *c)
{
	snprintf(c->path, sizeof(c->path), "/tmp/test_daemon_XXXXXX");
	c->fd = mkstemp(c->path);
	ck_assert_int_ge(c->fd, 0);
	c->saved = dup(2);
	fflush(stderr);
	dup2(c->fd, 2);
}

/* Puts stderr back; out gets what was written to it. */
static void release_stderr(struct caught *c, char *out, size_t size)
{
	ssize_t n;

	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	n = pread(c->fd, out, size - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	close(c->fd);
	unlink(c->path);
}

/* Runs daemon_start on argv with stderr caught in out. */
static int start(char **argv, int *first, char *out, size_t size)
{
	struct settings s;
	struct caught c;
	int argc = 0, rc;

	while (argv[argc])
		argc++;
	catch_stderr(&c);
	rc = daemon_start(&schema, &s, argc, argv, first);
	release_stderr(&c, out, size);
	if (rc < 0)
		config_release(&schema, &s);
	return rc;
}

START_TEST(test_daemon_start_refuses_arguments_a_daemon_does_not_take)
{
	char *plain[] = { "granary-test", "--name", "y", NULL };
	char *extra[] = { "granary-test", "--name", "y", "stray", NULL };
	char *extra2[] = { "granary-test", "stray", "--name", "y", NULL };
	char *level[] = { "granary-test", "--log.level", "debug", NULL };
	char *bad_level[] = { "granary-test", "--log.level", "loud", NULL };
	char *help[] = { "granary-test", "--help", NULL };
	char out[512];
	int first = 0;

	ck_assert_int_eq(start(plain, NULL, out, sizeof(out)), -1);
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(start(extra, NULL, out, sizeof(out)), 2);
	ck_assert_str_eq(out,
			 "granary-test: unexpected argument 'stray' (settings are flags, see --help)\n");
	/* a program that takes positionals gets their index instead */
	ck_assert_int_eq(start(extra2, &first, out, sizeof(out)), -1);
	ck_assert_int_eq(first, 3);
	ck_assert_str_eq(extra2[first], "stray");
	ck_assert_int_eq(start(level, NULL, out, sizeof(out)), -1);
	ck_assert_int_eq(log_get_level(), LOG_LEVEL_DEBUG);
	ck_assert_int_eq(start(bad_level, NULL, out, sizeof(out)), 2);
	ck_assert_str_eq(out,
			 "granary-test: key 'log.level': 'loud' is not debug, info, warn or error\n");
	ck_assert_int_eq(start(help, NULL, out, sizeof(out)), 0);
}
END_TEST

START_TEST(test_daemon_refuse_reports_and_exits_2)
{
	struct settings s;
	struct error err;
	struct caught c;
	char out[256];

	ck_assert_int_eq(config_apply_defaults(&schema, &s, &err), ERR_OK);
	error_set(&err, ERR_INVALID, "key 'name': too short");
	catch_stderr(&c);
	ck_assert_int_eq(daemon_refuse(&schema, &s, &err), 2);
	release_stderr(&c, out, sizeof(out));
	ck_assert_str_eq(out, "granary-test: key 'name': too short\n");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_daemon_start_refuses_arguments_a_daemon_does_not_take);
	tcase_add_test(tc, test_daemon_refuse_reports_and_exits_2);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
