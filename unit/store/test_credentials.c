/*
 * test_credentials.c - shared credentials INI parsing and source precedence.
 *
 * Each test starts from an environment without AWS_* variables and with
 * HOME pointing at an empty temporary directory, so the developer's own
 * ~/.aws/credentials never leaks in.
 */
#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/credentials.h"

#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define TOKEN "FwoGZXIvYXdzEXAMPLETOKEN"

/* Created in the parent process and removed there even when a forked
 * test fails before its own teardown; holds each test's home. */
static char base[64];
static char home[96];
static char paths[8][128];
static int npaths;

static void clear_aws_env(void)
{
	static const char *vars[] = {
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
	};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

static void setup(void)
{
	clear_aws_env();
	snprintf(home, sizeof(home), "%s/home.XXXXXX", base);
	ck_assert_ptr_nonnull(mkdtemp(home));
	setenv("HOME", home, 1);
	npaths = 0;
}

static void teardown(void)
{
	char aws[128];

	for (int i = npaths - 1; i >= 0; i--)
		remove(paths[i]);
	snprintf(aws, sizeof(aws), "%s/.aws", home);
	rmdir(aws);
	rmdir(home);
	clear_aws_env();
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup_base(void)
{
	strcpy(base, "/tmp/test_credentials.XXXXXX");
	if (!mkdtemp(base))
		abort();
}

static void teardown_base(void)
{
	nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text to home/rel (creating home/.aws when asked) and returns the path. */
static const char *write_file(const char *rel, const char *text)
{
	char *path = paths[npaths];
	FILE *f = NULL;

	ck_assert_int_lt(npaths, 7);
	if (strncmp(rel, ".aws/", 5) == 0) {
		char aws[128];

		snprintf(aws, sizeof(aws), "%s/.aws", home);
		mkdir(aws, 0700);
	}
	snprintf(path, sizeof(paths[0]), "%s/%s", home, rel);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_ge(fputs(text, f), 0);
	ck_assert_int_eq(fclose(f), 0);
	npaths++;
	return path;
}

static void assert_empty(const struct store_credentials *c)
{
	ck_assert_ptr_null(c->access_key_id);
	ck_assert_ptr_null(c->secret_access_key);
	ck_assert_ptr_null(c->session_token);
}

START_TEST(test_credentials_parse_reads_default_profile)
{
	static const char text[] =
		"[default]\n"
		"aws_access_key_id = AKIADEFAULT\n"
		"aws_secret_access_key = " SECRET "\n"
		"aws_session_token = " TOKEN "\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIADEFAULT");
	ck_assert_str_eq(c.secret_access_key, SECRET);
	ck_assert_str_eq(c.session_token, TOKEN);
	credentials_release(&c);
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_parse_selects_named_profile)
{
	static const char text[] =
		"[default]\n"
		"aws_access_key_id = AKIADEFAULT\n"
		"aws_secret_access_key = default-secret\n"
		"[prod]\n"
		"aws_access_key_id = AKIAPROD\n"
		"aws_secret_access_key = prod-secret\n"
		"[staging]\n"
		"aws_access_key_id = AKIASTAGING\n"
		"aws_secret_access_key = staging-secret\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", "prod", &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIAPROD");
	ck_assert_str_eq(c.secret_access_key, "prod-secret");
	ck_assert_ptr_null(c.session_token);
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_parse_uses_aws_profile_when_profile_is_null)
{
	static const char text[] =
		"[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n"
		"[dev]\naws_access_key_id = AKIADEV\naws_secret_access_key = v\n";
	struct store_credentials c;
	struct error err;

	setenv("AWS_PROFILE", "dev", 1);
	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIADEV");
	credentials_release(&c);
	/* An explicit profile beats AWS_PROFILE. */
	ck_assert_int_eq(credentials_parse(text, "creds", "default", &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIADEFAULT");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_parse_trims_whitespace_and_ignores_key_case)
{
	static const char text[] =
		"\r\n"
		"  [ default ]  \r\n"
		"\tAWS_Access_Key_ID\t=\t AKIAMIXED  \r\n"
		"   aws_SECRET_access_key=" SECRET "\r\n"
		"region = us-east-1\r\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIAMIXED");
	ck_assert_str_eq(c.secret_access_key, SECRET);
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_parse_skips_comments)
{
	static const char text[] =
		"# a comment with [brackets] and = signs\n"
		"; [default]\n"
		"[default]\n"
		"aws_access_key_id = AKIAREAL\n"
		"# aws_access_key_id = AKIACOMMENTED\n"
		"  ; aws_secret_access_key = commented\n"
		"aws_secret_access_key = real-secret\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIAREAL");
	ck_assert_str_eq(c.secret_access_key, "real-secret");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_parse_ignores_syntax_of_other_profiles)
{
	static const char text[] =
		"[other]\n"
		"s3 =\n"
		"  max_concurrent_requests = 20\n"
		"no equals sign here\n"
		"[default]\n"
		"aws_access_key_id = AKIA\n"
		"aws_secret_access_key = s\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIA");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_parse_missing_profile_names_file_and_profile)
{
	static const char text[] =
		"[default]\naws_access_key_id = AKIA\naws_secret_access_key = " SECRET "\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "/etc/granary/creds", "prod", &c, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'/etc/granary/creds'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "'prod'"));
	ck_assert_ptr_null(strstr(err.msg, SECRET));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_parse_half_credentials_name_missing_key_not_value)
{
	static const char only_secret[] = "[default]\naws_secret_access_key = " SECRET "\n";
	static const char only_id[] =
		"[default]\naws_access_key_id = AKIAONLY\naws_session_token = " TOKEN "\n";
	static const char empty_secret[] =
		"[default]\naws_access_key_id = AKIAONLY\naws_secret_access_key =\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(only_secret, "creds", NULL, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "aws_access_key_id"));
	ck_assert_ptr_nonnull(strstr(err.msg, "'default'"));
	ck_assert_ptr_null(strstr(err.msg, SECRET));
	assert_empty(&c);

	ck_assert_int_eq(credentials_parse(only_id, "creds", NULL, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "aws_secret_access_key"));
	ck_assert_ptr_null(strstr(err.msg, "AKIAONLY"));
	ck_assert_ptr_null(strstr(err.msg, TOKEN));
	assert_empty(&c);

	ck_assert_int_eq(credentials_parse(empty_secret, "creds", NULL, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "aws_secret_access_key"));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_parse_malformed_line_names_line_not_content)
{
	static const char text[] =
		"[default]\n"
		"aws_access_key_id = AKIA\n"
		"aws_secret_access_key " SECRET "\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'creds' line 3"));
	ck_assert_ptr_null(strstr(err.msg, SECRET));
	ck_assert_ptr_null(strstr(err.msg, "AKIA"));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_parse_rejects_malformed_section_header)
{
	static const char text[] = "# top\n[default\naws_access_key_id = AKIA\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "line 2"));
	ck_assert_ptr_nonnull(strstr(err.msg, "section"));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_parse_later_value_wins)
{
	static const char text[] =
		"[default]\n"
		"aws_access_key_id = AKIAOLD\n"
		"aws_secret_access_key = s\n"
		"[default]\n"
		"aws_access_key_id = AKIANEW\n";
	struct store_credentials c;
	struct error err;

	ck_assert_int_eq(credentials_parse(text, "creds", NULL, &c, &err), ERR_OK);
	ck_assert_str_eq(c.access_key_id, "AKIANEW");
	ck_assert_str_eq(c.secret_access_key, "s");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_load_without_any_source_is_anonymous)
{
	struct store_credentials c;
	struct error err;
	bool found = true;

	error_clear(&err);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_OK);
	ck_assert(!found);
	assert_empty(&c);
	ck_assert_int_eq(err.code, ERR_OK);
}
END_TEST

START_TEST(test_credentials_load_explicit_file_wins_over_env_and_shared)
{
	const char *explicit = write_file("explicit",
		"[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = file-secret\n");
	struct store_credentials c;
	struct error err;
	bool found = false;

	write_file(".aws/credentials",
		   "[default]\naws_access_key_id = AKIAHOME\naws_secret_access_key = home\n");
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
	ck_assert_int_eq(credentials_load(explicit, NULL, &c, &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(c.access_key_id, "AKIAFILE");
	ck_assert_str_eq(c.secret_access_key, "file-secret");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_load_env_wins_over_shared_file)
{
	struct store_credentials c;
	struct error err;
	bool found = false;

	write_file(".aws/credentials",
		   "[default]\naws_access_key_id = AKIAHOME\naws_secret_access_key = home\n");
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
	setenv("AWS_SESSION_TOKEN", TOKEN, 1);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(c.access_key_id, "AKIAENV");
	ck_assert_str_eq(c.secret_access_key, "env-secret");
	ck_assert_str_eq(c.session_token, TOKEN);
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_load_half_env_names_missing_variable)
{
	struct store_credentials c;
	struct error err;
	bool found = true;

	write_file(".aws/credentials",
		   "[default]\naws_access_key_id = AKIAHOME\naws_secret_access_key = home\n");
	setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_INVALID);
	ck_assert(!found);
	assert_empty(&c);
	ck_assert_ptr_nonnull(strstr(err.msg, "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"));
	ck_assert_ptr_null(strstr(err.msg, SECRET));

	unsetenv("AWS_SECRET_ACCESS_KEY");
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "but AWS_SECRET_ACCESS_KEY is not"));
	ck_assert_ptr_null(strstr(err.msg, "AKIAENV"));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_load_treats_empty_env_as_unset)
{
	struct store_credentials c;
	struct error err;
	bool found = false;

	write_file(".aws/credentials",
		   "[default]\naws_access_key_id = AKIAHOME\naws_secret_access_key = home\n");
	setenv("AWS_ACCESS_KEY_ID", "", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "", 1);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(c.access_key_id, "AKIAHOME");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_load_reads_home_aws_credentials)
{
	struct store_credentials c;
	struct error err;
	bool found = false;

	write_file(".aws/credentials",
		   "[default]\naws_access_key_id = AKIAHOME\naws_secret_access_key = home\n"
		   "[team]\naws_access_key_id = AKIATEAM\naws_secret_access_key = team\n");
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(c.access_key_id, "AKIAHOME");
	credentials_release(&c);

	found = false;
	ck_assert_int_eq(credentials_load(NULL, "team", &c, &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(c.access_key_id, "AKIATEAM");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_load_shared_file_env_overrides_home)
{
	const char *shared = write_file("shared",
		"[default]\naws_access_key_id = AKIASHARED\naws_secret_access_key = shared\n");
	struct store_credentials c;
	struct error err;
	bool found = false;

	write_file(".aws/credentials",
		   "[default]\naws_access_key_id = AKIAHOME\naws_secret_access_key = home\n");
	setenv("AWS_SHARED_CREDENTIALS_FILE", shared, 1);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_OK);
	ck_assert(found);
	ck_assert_str_eq(c.access_key_id, "AKIASHARED");
	credentials_release(&c);
}
END_TEST

START_TEST(test_credentials_load_skips_missing_shared_file)
{
	struct store_credentials c;
	struct error err;
	bool found = true;
	char missing[128];

	snprintf(missing, sizeof(missing), "%s/nope", home);
	setenv("AWS_SHARED_CREDENTIALS_FILE", missing, 1);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_OK);
	ck_assert(!found);
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_load_shared_file_without_default_is_anonymous)
{
	struct store_credentials c;
	struct error err;
	bool found = true;

	write_file(".aws/credentials",
		   "[prod]\naws_access_key_id = AKIAPROD\naws_secret_access_key = p\n");
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_OK);
	ck_assert(!found);
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_load_named_profile_missing_from_shared_file_fails)
{
	struct store_credentials c;
	struct error err;
	bool found = true;

	write_file(".aws/credentials",
		   "[default]\naws_access_key_id = AKIA\naws_secret_access_key = " SECRET "\n");
	setenv("AWS_PROFILE", "ghost", 1);
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_INVALID);
	ck_assert(!found);
	ck_assert_ptr_nonnull(strstr(err.msg, "'ghost'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "/.aws/credentials'"));
	ck_assert_ptr_null(strstr(err.msg, SECRET));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_load_broken_shared_file_is_an_error)
{
	struct store_credentials c;
	struct error err;
	bool found = true;

	write_file(".aws/credentials", "[default]\naws_secret_access_key = " SECRET "\n");
	ck_assert_int_eq(credentials_load(NULL, NULL, &c, &found, &err), ERR_INVALID);
	ck_assert(!found);
	ck_assert_ptr_nonnull(strstr(err.msg, "aws_access_key_id"));
	ck_assert_ptr_null(strstr(err.msg, SECRET));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_load_missing_explicit_file_is_not_found)
{
	struct store_credentials c;
	struct error err;
	bool found = true;
	char missing[128];

	snprintf(missing, sizeof(missing), "%s/does-not-exist", home);
	/* Other sources must not hide a broken explicit setting. */
	setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
	ck_assert_int_eq(credentials_load(missing, NULL, &c, &found, &err), ERR_NOT_FOUND);
	ck_assert(!found);
	ck_assert_ptr_nonnull(strstr(err.msg, missing));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_load_unreadable_explicit_path_is_an_error)
{
	struct store_credentials c;
	struct error err;
	bool found = true;

	/* A directory cannot be read as a file, even by root. */
	ck_assert_int_eq(credentials_load(home, NULL, &c, &found, &err), ERR_INVALID);
	ck_assert(!found);
	ck_assert_ptr_nonnull(strstr(err.msg, home));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_load_explicit_file_without_profile_is_invalid)
{
	const char *explicit = write_file("explicit",
		"[other]\naws_access_key_id = AKIA\naws_secret_access_key = " SECRET "\n");
	struct store_credentials c;
	struct error err;
	bool found = true;

	ck_assert_int_eq(credentials_load(explicit, NULL, &c, &found, &err), ERR_INVALID);
	ck_assert(!found);
	ck_assert_ptr_nonnull(strstr(err.msg, explicit));
	ck_assert_ptr_nonnull(strstr(err.msg, "'default'"));
	ck_assert_ptr_null(strstr(err.msg, SECRET));
	assert_empty(&c);
}
END_TEST

START_TEST(test_credentials_release_clears_and_tolerates_empty)
{
	struct store_credentials c = { NULL, NULL, NULL };

	credentials_release(&c);
	assert_empty(&c);
	credentials_release(NULL);
	c.access_key_id = strdup("AKIA");
	c.secret_access_key = strdup(SECRET);
	c.session_token = strdup(TOKEN);
	credentials_release(&c);
	assert_empty(&c);
}
END_TEST

static Suite *credentials_suite(void)
{
	Suite *s = suite_create("credentials");
	TCase *tc = tcase_create("core");

	tcase_add_unchecked_fixture(tc, setup_base, teardown_base);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_credentials_parse_reads_default_profile);
	tcase_add_test(tc, test_credentials_parse_selects_named_profile);
	tcase_add_test(tc, test_credentials_parse_uses_aws_profile_when_profile_is_null);
	tcase_add_test(tc, test_credentials_parse_trims_whitespace_and_ignores_key_case);
	tcase_add_test(tc, test_credentials_parse_skips_comments);
	tcase_add_test(tc, test_credentials_parse_ignores_syntax_of_other_profiles);
	tcase_add_test(tc, test_credentials_parse_missing_profile_names_file_and_profile);
	tcase_add_test(tc, test_credentials_parse_half_credentials_name_missing_key_not_value);
	tcase_add_test(tc, test_credentials_parse_malformed_line_names_line_not_content);
	tcase_add_test(tc, test_credentials_parse_rejects_malformed_section_header);
	tcase_add_test(tc, test_credentials_parse_later_value_wins);
	tcase_add_test(tc, test_credentials_load_without_any_source_is_anonymous);
	tcase_add_test(tc, test_credentials_load_explicit_file_wins_over_env_and_shared);
	tcase_add_test(tc, test_credentials_load_env_wins_over_shared_file);
	tcase_add_test(tc, test_credentials_load_half_env_names_missing_variable);
	tcase_add_test(tc, test_credentials_load_treats_empty_env_as_unset);
	tcase_add_test(tc, test_credentials_load_reads_home_aws_credentials);
	tcase_add_test(tc, test_credentials_load_shared_file_env_overrides_home);
	tcase_add_test(tc, test_credentials_load_skips_missing_shared_file);
	tcase_add_test(tc, test_credentials_load_shared_file_without_default_is_anonymous);
	tcase_add_test(tc, test_credentials_load_named_profile_missing_from_shared_file_fails);
	tcase_add_test(tc, test_credentials_load_broken_shared_file_is_an_error);
	tcase_add_test(tc, test_credentials_load_missing_explicit_file_is_not_found);
	tcase_add_test(tc, test_credentials_load_unreadable_explicit_path_is_an_error);
	tcase_add_test(tc, test_credentials_load_explicit_file_without_profile_is_invalid);
	tcase_add_test(tc, test_credentials_release_clears_and_tolerates_empty);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(credentials_suite());
	int failed = 0;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
