/*
 * test_registration.c - the kubelet registration core: what GetInfo tells
 * the kubelet, and the verdict that NotifyRegistrationStatus sets.
 */
#include <string.h>

#include "csi/identity.h"
#include "csi/registration.h"
#include "unit/check_main.h"

#define KUBELET_ENDPOINT "/var/lib/kubelet/plugins/csi.granary.io/csi.sock"

START_TEST(test_registration_info_names_the_driver_and_host_socket)
{
	struct registration r;
	struct registration_info info;

	registration_init(&r, KUBELET_ENDPOINT);
	registration_info(&r, &info);
	ck_assert_str_eq(info.type, "CSIPlugin");
	ck_assert_str_eq(info.name, IDENTITY_PLUGIN_NAME);
	ck_assert_str_eq(info.name, "csi.granary.io");
	ck_assert_str_eq(info.endpoint, KUBELET_ENDPOINT);
	ck_assert_uint_eq(info.nversions, 1);
	ck_assert_str_eq(info.versions[0], "1.0.0");
	registration_release(&r);
}
END_TEST

START_TEST(test_registration_pending_until_the_kubelet_says_yes)
{
	struct registration r;
	struct error why;

	registration_init(&r, KUBELET_ENDPOINT);
	ck_assert(!registration_ok(&r, &why));
	ck_assert_int_eq(why.code, ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(why.msg, "not registered with the kubelet yet"));
	ck_assert(!registration_ok(&r, NULL));
	registration_notify(&r, true, "");
	ck_assert(registration_ok(&r, &why));
	registration_release(&r);
}
END_TEST

START_TEST(test_registration_refusal_keeps_the_kubelets_message)
{
	struct registration r;
	struct error why;

	registration_init(&r, KUBELET_ENDPOINT);
	registration_notify(&r, true, NULL);
	registration_notify(&r, false, "error: highest supported version reported by driver is v0.3.0");
	ck_assert(!registration_ok(&r, &why));
	ck_assert_str_eq(why.msg, "the kubelet refused the registration: error: highest supported "
				  "version reported by driver is v0.3.0");
	/* No message from the kubelet: still a reason. */
	registration_notify(&r, false, NULL);
	ck_assert(!registration_ok(&r, &why));
	ck_assert_str_eq(why.msg, "the kubelet refused the registration: no reason given");
	/* The last word wins. */
	registration_notify(&r, true, "ignored");
	ck_assert(registration_ok(&r, &why));
	registration_release(&r);
}
END_TEST

START_TEST(test_registration_reset_forgets_the_verdict)
{
	struct registration r;
	struct error why;

	registration_init(&r, KUBELET_ENDPOINT);
	registration_notify(&r, true, NULL);
	registration_reset(&r);
	ck_assert(!registration_ok(&r, &why));
	ck_assert_ptr_nonnull(strstr(why.msg, "not registered with the kubelet yet"));
	registration_release(&r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("registration");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_registration_info_names_the_driver_and_host_socket);
	tcase_add_test(tc, test_registration_pending_until_the_kubelet_says_yes);
	tcase_add_test(tc, test_registration_refusal_keeps_the_kubelets_message);
	tcase_add_test(tc, test_registration_reset_forgets_the_verdict);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
