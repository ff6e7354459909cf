/*
 * test_credpolicy.c - who may read what with the cluster's store
 * credentials (meta/credpolicy.c): rules x namespace x source -> allowed,
 * or the reason; and the rules refused, each naming the bad rule.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "meta/credpolicy.h"
#include "unit/check_main.h"

static struct credpolicy *parse_ok(const char *text)
{
	struct credpolicy *p = NULL;
	struct error err;

	ck_assert_msg(credpolicy_parse(text, &p, &err) == ERR_OK, "'%s': %s", text, err.msg);
	return p;
}

/* One namespace and source, and whether the rules allow them. */
struct verdict {
	const char *ns, *source;
	bool allowed;
};

static void expect(const struct credpolicy *p, const struct verdict *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct error err;
		enum error_code rc = credpolicy_check(p, v[i].ns, v[i].source, &err);

		ck_assert_msg(rc == (v[i].allowed ? ERR_OK : ERR_PERMISSION), "%s %s: %s, not %s",
			      v[i].ns, v[i].source, rc == ERR_OK ? "allowed" : err.msg,
			      v[i].allowed ? "allowed" : "refused");
	}
}

START_TEST(test_credpolicy_allows_a_namespace_its_prefixes_only)
{
	struct credpolicy *p = parse_ok("granary-system *\n"
					"team-a s3://shared/imagenet/ s3://shared/coco/\n"
					"* s3://public/");
	static const struct verdict v[] = {
		{ "granary-system", "s3://private/x/", true },
		{ "granary-system", "file:///srv/datasets/x/", true },
		{ "team-a", "s3://shared/imagenet/", true },
		{ "team-a", "s3://shared/imagenet/train/", true },
		{ "team-a", "s3://shared/coco/", true },
		{ "team-a", "s3://shared/", false },
		{ "team-a", "s3://shared", false },
		{ "team-a", "s3://shared/imagenet-private/", false },
		{ "team-a", "s3://shared/imagen/", false },
		{ "team-a", "s3://other/imagenet/", false },
		/* "*": every namespace, team-a included. */
		{ "team-a", "s3://public/", true },
		{ "team-b", "s3://public/", true },
		{ "team-b", "s3://public", true },
		{ "team-b", "s3://public/a/b/", true },
		{ "team-b", "s3://public-private/", false },
		{ "team-b", "s3://shared/imagenet/", false },
		{ "team-b", "s3://private/x/", false },
	};

	expect(p, v, sizeof(v) / sizeof(v[0]));
	credpolicy_free(p);
}
END_TEST

START_TEST(test_credpolicy_file_sources_by_whole_directories)
{
	struct credpolicy *p = parse_ok("team-a file:///srv/datasets/imagenet/");
	static const struct verdict v[] = {
		{ "team-a", "file:///srv/datasets/imagenet/", true },
		{ "team-a", "file:///srv/datasets/imagenet", true },
		{ "team-a", "file:///srv/datasets/imagenet/train/", true },
		{ "team-a", "file:///srv/datasets/imagenet2/", false },
		{ "team-a", "file:///srv/datasets/", false },
		{ "team-a", "s3://imagenet/", false },
	};

	expect(p, v, sizeof(v) / sizeof(v[0]));
	credpolicy_free(p);
}
END_TEST

/*
 * A file:// source as it resolves is judged against the rules' directories
 * as they resolve: a rule written through a link to the directories holds
 * for the directory it names, and nothing beside it.
 */
START_TEST(test_credpolicy_resolved_file_sources_against_resolved_rules)
{
	char base[] = "/tmp/granary-credpolicy-XXXXXX", dir[200], link[200], rule[300], src[300];
	struct credpolicy *p;
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(dir, sizeof(dir), "%s/real/team-a/sub", base);
	ck_assert_int_eq(fileio_mkdirs(dir, 0755, &err), ERR_OK);
	snprintf(dir, sizeof(dir), "%s/real/team-b", base);
	ck_assert_int_eq(fileio_mkdirs(dir, 0755, &err), ERR_OK);
	snprintf(link, sizeof(link), "%s/link", base);
	ck_assert_int_eq(symlink("real", link), 0);
	snprintf(rule, sizeof(rule), "team-a file://%s/team-a/\n* file://%s/missing/", link, base);
	p = parse_ok(rule);
	snprintf(src, sizeof(src), "file://%s/real/team-a/sub/", base);
	ck_assert_int_eq(credpolicy_check_resolved(p, "team-a", src, &err), ERR_OK);
	/* As written, the rule names the link, not the resolved directory. */
	ck_assert_int_eq(credpolicy_check(p, "team-a", src, &err), ERR_PERMISSION);
	snprintf(src, sizeof(src), "file://%s/real/team-b/", base);
	ck_assert_int_eq(credpolicy_check_resolved(p, "team-a", src, &err), ERR_PERMISSION);
	ck_assert_msg(strstr(err.msg, src) && strstr(err.msg, "a Secret opens no file:// source"),
		      "%s", err.msg);
	snprintf(src, sizeof(src), "file://%s/real/team-a/", base);
	ck_assert_int_eq(credpolicy_check_resolved(p, "team-b", src, &err), ERR_PERMISSION);
	credpolicy_free(p);
	snprintf(rule, sizeof(rule), "rm -rf '%s'", base);
	ck_assert_int_eq(system(rule), 0);
}
END_TEST

START_TEST(test_credpolicy_empty_allows_no_namespace)
{
	static const char *const texts[] = { "", " \n\t; \r\n", NULL };

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct credpolicy *p = parse_ok(texts[i]);
		static const struct verdict v[] = {
			{ "granary-system", "s3://shared/", false },
			{ "team-a", "file:///srv/x/", false },
		};

		expect(p, v, sizeof(v) / sizeof(v[0]));
		credpolicy_free(p);
	}
}
END_TEST

/* Blanks around words and rules, ';' between rules (a flag's form). */
START_TEST(test_credpolicy_rules_on_one_line_and_blanks)
{
	struct credpolicy *p =
		parse_ok("  team-a\ts3://shared/a/   s3://shared/b/ ;team-b s3://data/\r\n");
	static const struct verdict v[] = {
		{ "team-a", "s3://shared/a/", true },
		{ "team-a", "s3://shared/b/x/", true },
		{ "team-b", "s3://data/", true },
		{ "team-b", "s3://shared/a/", false },
	};

	expect(p, v, sizeof(v) / sizeof(v[0]));
	credpolicy_free(p);
}
END_TEST

START_TEST(test_credpolicy_refusal_names_namespace_source_and_remedy)
{
	struct credpolicy *p = parse_ok("team-a s3://shared/imagenet/");
	struct error err;

	ck_assert_int_eq(credpolicy_check(p, "team-a", "s3://private/x/", &err), ERR_PERMISSION);
	ck_assert_str_eq(err.msg, "namespace 'team-a' may not read 's3://private/x/' with the "
				  "cluster's store credentials (no rule of "
				  "datasets.cluster_credentials allows it): name a Secret of "
				  "team-a that can read it in spec.secretRef, or ask the "
				  "administrator to allow it (the chart's value "
				  "datasets.clusterCredentials)");
	/* A directory: no Secret would open it, so none is suggested. */
	ck_assert_int_eq(credpolicy_check(p, "team-a", "file:///srv/x/", &err), ERR_PERMISSION);
	ck_assert_str_eq(err.msg, "namespace 'team-a' may not read 'file:///srv/x/' (no rule of "
				  "datasets.cluster_credentials allows it, and a Secret opens no "
				  "file:// source): ask the administrator to allow it (the "
				  "chart's value datasets.clusterCredentials)");
	credpolicy_free(p);
}
END_TEST

START_TEST(test_credpolicy_parse_names_the_bad_rule)
{
	static const struct {
		const char *text, *expect;
	} bad[] = {
		{ "team-a",
		  "key 'datasets.cluster_credentials': rule 1 ('team-a'): names no source" },
		{ "granary-system *\nTeam_A s3://data/",
		  "rule 2 ('Team_A s3://data/'): 'Team_A' is neither '*' nor a namespace" },
		{ "a.b s3://data/",
		  "rule 1 ('a.b s3://data/'): 'a.b' is neither '*' nor a namespace" },
		{ "-a s3://data/", "'-a' is neither '*' nor a namespace" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa s3://data/",
		  "is neither '*' nor a namespace (at most 63" },
		{ "team-a s3://shared/x",
		  "rule 1 ('team-a s3://shared/x'): source 's3://shared/x' does not end in '/' (a "
		  "rule names whole segments: 's3://shared/x/')" },
		{ "team-a s3://shared", "source 's3://shared' does not end in '/'" },
		{ "team-a shared/",
		  "rule 1 ('team-a shared/'): source URI 'shared/': scheme must be" },
		{ "team-a https://s3.example/b/", "scheme must be s3:// or file://" },
		{ "team-a s3://Data/", "rule 1 ('team-a s3://Data/'): source URI 's3://Data/'" },
		{ "team-a s3://data/../x/", "a '..' segment" },
		{ "team-a file://srv/x/", "file:// needs an absolute path" },
		/* Blank rules are not counted. */
		{ "x *;; y s3://data/ z", "rule 2 ('y s3://data/ z'): source URI 'z'" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct credpolicy *p = (struct credpolicy *)1;
		struct error err;

		ck_assert_msg(credpolicy_parse(bad[i].text, &p, &err) == ERR_INVALID, "'%s' taken",
			      bad[i].text);
		ck_assert_ptr_null(p);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "'%s': '%s' lacks '%s'", bad[i].text,
			      err.msg, bad[i].expect);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("credpolicy");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_credpolicy_allows_a_namespace_its_prefixes_only);
	tcase_add_test(tc, test_credpolicy_file_sources_by_whole_directories);
	tcase_add_test(tc, test_credpolicy_empty_allows_no_namespace);
	tcase_add_test(tc, test_credpolicy_rules_on_one_line_and_blanks);
	tcase_add_test(tc, test_credpolicy_refusal_names_namespace_source_and_remedy);
	tcase_add_test(tc, test_credpolicy_resolved_file_sources_against_resolved_rules);
	tcase_add_test(tc, test_credpolicy_parse_names_the_bad_rule);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
