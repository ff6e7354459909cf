/*
 * test_fusemount.c - max_read's rule and mountinfo lines
 * (common/fusemount.c); setting a real mount's read-ahead needs a mount
 * and is e2e/fuse's and e2e/csi's.
 */
#include <string.h>

#include "common/fusemount.h"
#include "unit/check_main.h"

START_TEST(test_fusemount_parse_line_undoes_octal_escapes)
{
	const char *line = "436 29 0:61 / /var/lib/kubelet/plugins/kubernetes.io/csi/granary/a\\040b/globalmount "
			   "ro,nosuid,nodev,relatime shared:231 - fuse.granary granary:imagenet "
			   "ro,user_id=0,group_id=0,allow_other\n";
	unsigned major = 99, minor = 99;

	ck_assert(fusemount_parse_line(
		line, "/var/lib/kubelet/plugins/kubernetes.io/csi/granary/a b/globalmount", &major,
		&minor));
	ck_assert_uint_eq(major, 0);
	ck_assert_uint_eq(minor, 61);
	/* the escaped spelling is not the path */
	ck_assert(!fusemount_parse_line(
		line, "/var/lib/kubelet/plugins/kubernetes.io/csi/granary/a\\040b/globalmount", &major,
		&minor));
	/* another mount point, a prefix of it, a malformed line */
	ck_assert(!fusemount_parse_line(line, "/var/lib/kubelet", &major, &minor));
	ck_assert(!fusemount_parse_line("436 29 x / /mnt rw - ext4 /dev/sda rw\n", "/mnt", &major,
					&minor));
	ck_assert(!fusemount_parse_line("436 29", "/mnt", &major, &minor));
	ck_assert(!fusemount_parse_line("", "/mnt", &major, &minor));
	ck_assert(fusemount_parse_line("1 2 8:3 / /mnt rw - ext4 /dev/sda3 rw\n", "/mnt", &major,
				       &minor));
	ck_assert_uint_eq(major, 8);
	ck_assert_uint_eq(minor, 3);
}
END_TEST

START_TEST(test_fusemount_parse_entry_reads_every_field)
{
	struct fusemount_entry e;

	/* a container's copy of a volume, a subPath of it, no optional field */
	ck_assert(fusemount_parse_entry("812 790 0:74 /train /data ro,nosuid,nodev - fuse.granary "
					"granary:imagenet ro,user_id=0\n",
					&e));
	ck_assert_int_eq(e.mount_id, 812);
	ck_assert_int_eq(e.parent_id, 790);
	ck_assert_uint_eq(e.major, 0);
	ck_assert_uint_eq(e.minor, 74);
	ck_assert_str_eq(e.root, "/train");
	ck_assert_str_eq(e.point, "/data");
	ck_assert_str_eq(e.fstype, "fuse.granary");
	ck_assert_str_eq(e.source, "granary:imagenet");
	/* two optional fields, escapes in the mount point */
	ck_assert(fusemount_parse_entry("1 2 8:3 / /mnt/a\\040b rw shared:1 master:2 - ext4 "
					"/dev/sda3 rw\n",
					&e));
	ck_assert_str_eq(e.point, "/mnt/a b");
	ck_assert_str_eq(e.fstype, "ext4");
	ck_assert_str_eq(e.source, "/dev/sda3");
	/* malformed: no device, no "-", nothing after it, no mount id */
	ck_assert(!fusemount_parse_entry("1 2 x / /mnt rw - ext4 /dev/sda rw\n", &e));
	ck_assert(!fusemount_parse_entry("a 2 8:3 / /mnt rw - ext4 /dev/sda rw\n", &e));
	ck_assert(!fusemount_parse_entry("1 2 8:3 / /mnt rw ext4 /dev/sda rw\n", &e));
	ck_assert(!fusemount_parse_entry("1 2 8:3 / /mnt rw -\n", &e));
	ck_assert(!fusemount_parse_entry("", &e));
}
END_TEST

START_TEST(test_fusemount_max_read_and_read_ahead_rules)
{
	struct error err;

	ck_assert_int_eq(fusemount_check_max_read("key 'max_read'", 1u << 20, &err), ERR_OK);
	ck_assert_int_eq(fusemount_check_max_read("key 'max_read'", 4096, &err), ERR_OK);
	ck_assert_int_eq(fusemount_check_max_read("key 'fuse_max_read'", 0, &err), ERR_INVALID);
	ck_assert_int_eq(fusemount_check_max_read("key 'fuse_max_read'", (1u << 20) + 4096, &err),
			 ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "key 'fuse_max_read': must be a multiple of 4KiB from 4KiB to 1MiB, got 1052672 bytes");
	ck_assert_int_eq(fusemount_check_max_read("x", 5000, &err), ERR_INVALID);
	ck_assert_int_eq(fusemount_check_read_ahead("x", 0, &err), ERR_OK);
	ck_assert_int_eq(fusemount_check_read_ahead("x", 8u << 20, &err), ERR_OK);
	ck_assert_int_eq(fusemount_check_read_ahead("key 'read_ahead'", 1000, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'read_ahead': must be a multiple of 4KiB"));
}
END_TEST

START_TEST(test_fusemount_set_read_ahead_names_a_missing_mount)
{
	struct error err;

	ck_assert_int_eq(fusemount_set_read_ahead("/nonexistent/granary-mount", 1u << 20, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "no mount at '/nonexistent/granary-mount'"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fusemount");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_fusemount_parse_line_undoes_octal_escapes);
	tcase_add_test(tc, test_fusemount_parse_entry_reads_every_field);
	tcase_add_test(tc, test_fusemount_max_read_and_read_ahead_rules);
	tcase_add_test(tc, test_fusemount_set_read_ahead_names_a_missing_mount);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
