/*
 * test_placement.c - rendezvous placement (block/placement.c): every
 * client picks the same owner from the same membership, whatever its
 * order; a worker that leaves moves only its own blocks, one that joins
 * takes only blocks it wins; blocks spread over the workers; whether a
 * new membership keeps every member.
 */
#include <stdio.h>
#include <string.h>

#include "block/placement.h"
#include "unit/check_main.h"

#define NBLOCKS 4000

static void hash_of(int i, uint8_t hash[BLOCK_HASH_LEN])
{
	char object[32];
	struct block_key k = { .endpoint = "", .bucket = "b", .object = object, .etag = "e",
			       .block_size = 4u << 20, .index = (uint64_t)i % 7 };

	snprintf(object, sizeof(object), "shard-%d", i);
	block_key_hash(&k, hash);
}

static struct placement *with(const struct placement_worker *w, size_t n)
{
	struct placement *p = NULL;
	struct error err;

	ck_assert_int_eq(placement_new(&p, &err), ERR_OK);
	ck_assert_int_eq(placement_update(p, w, n, 1, &err), ERR_OK);
	return p;
}

static void owner_id(struct placement *p, int i, char *id)
{
	uint8_t hash[BLOCK_HASH_LEN];
	char addr[PLACEMENT_ADDRESS_MAX];

	hash_of(i, hash);
	ck_assert_int_eq(placement_owner(p, hash, addr, id, 64), ERR_OK);
	ck_assert_int_eq(addr[5], id[1]); /* "host-X:1" for "wX" */
}

static const struct placement_worker three[] = {
	{ "wa", "host-a:1" }, { "wb", "host-b:1" }, { "wc", "host-c:1" },
};
static const struct placement_worker three_reversed[] = {
	{ "wc", "host-c:1" }, { "wb", "host-b:1" }, { "wa", "host-a:1" },
};
static const struct placement_worker two[] = { { "wa", "host-a:1" }, { "wc", "host-c:1" } };

START_TEST(test_placement_same_owner_whatever_the_order)
{
	struct placement *p = with(three, 3), *q = with(three_reversed, 3);
	char a[64], b[64];
	int count[3] = { 0 };

	for (int i = 0; i < NBLOCKS; i++) {
		owner_id(p, i, a);
		owner_id(q, i, b);
		ck_assert_str_eq(a, b);
		count[a[1] - 'a']++;
	}
	/* spread: each of three gets about a third */
	for (int w = 0; w < 3; w++)
		ck_assert_msg(count[w] > NBLOCKS / 4 && count[w] < NBLOCKS / 2 - NBLOCKS / 10,
			      "worker %d owns %d of %d", w, count[w], NBLOCKS);
	placement_free(p);
	placement_free(q);
}
END_TEST

START_TEST(test_placement_a_leaving_worker_moves_only_its_blocks)
{
	struct placement *p = with(three, 3), *q = with(two, 2);
	char a[64], b[64];
	int moved = 0;

	for (int i = 0; i < NBLOCKS; i++) {
		owner_id(p, i, a);
		owner_id(q, i, b);
		if (strcmp(a, "wb") == 0) {
			ck_assert_str_ne(b, "wb");
			moved++;
		} else {
			ck_assert_str_eq(a, b);
		}
	}
	ck_assert_int_gt(moved, 0);
	placement_free(p);
	placement_free(q);
}
END_TEST

START_TEST(test_placement_membership_and_refusals)
{
	struct placement *p = NULL;
	struct placement_worker bad = { "wx", NULL };
	char addr[PLACEMENT_ADDRESS_MAX + 10];
	uint8_t hash[BLOCK_HASH_LEN];
	struct error err;

	ck_assert_int_eq(placement_new(&p, &err), ERR_OK);
	hash_of(1, hash);
	ck_assert_int_eq(placement_owner(p, hash, addr, NULL, 0), ERR_NOT_FOUND);
	ck_assert_uint_eq(placement_count(p), 0);
	ck_assert_int_eq(placement_update(p, three, 3, 9, &err), ERR_OK);
	ck_assert_uint_eq(placement_version(p), 9);
	ck_assert_uint_eq(placement_count(p), 3);
	ck_assert(placement_has(p, "wb"));
	ck_assert(!placement_has(p, "wd"));
	memset(addr, 'h', PLACEMENT_ADDRESS_MAX);
	addr[PLACEMENT_ADDRESS_MAX] = '\0';
	bad.address = addr;
	ck_assert_int_eq(placement_update(p, &bad, 1, 10, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "worker 'wx': address too long"));
	/* a refused update leaves the membership as it was */
	ck_assert_uint_eq(placement_version(p), 9);
	ck_assert_uint_eq(placement_count(p), 3);
	ck_assert_int_eq(placement_update(p, NULL, 0, 11, &err), ERR_OK);
	ck_assert_int_eq(placement_owner(p, hash, addr, NULL, 0), ERR_NOT_FOUND);
	placement_free(p);
}
END_TEST

/*
 * Every member is among the new workers when the same workers come back
 * in any order, at any address, or with others joining; not when one of
 * them is missing. Then no member gains a block: each block stays with
 * its owner or goes to a newcomer.
 */
START_TEST(test_placement_all_among)
{
	static const struct placement_worker moved[] = {
		{ "wb", "host-b2:1" }, { "wc", "host-c:1" }, { "wa", "host-a9:1" },
	};
	static const struct placement_worker other[] = {
		{ "wa", "host-a:1" }, { "wb", "host-b:1" }, { "wd", "host-d:1" },
	};
	static const struct placement_worker four[] = {
		{ "wd", "host-d:1" }, { "wc", "host-c:1" },
		{ "wa", "host-a:1" }, { "wb", "host-b:1" },
	};
	struct placement *p = with(three, 3), *q = with(four, 4), *none = with(NULL, 0);
	char a[64], b[64];
	int joined = 0;

	ck_assert(placement_all_among(p, three_reversed, 3));
	ck_assert(placement_all_among(p, moved, 3));
	ck_assert(placement_all_among(p, four, 4));
	ck_assert(!placement_all_among(p, two, 2));
	ck_assert(!placement_all_among(p, other, 3));
	ck_assert(!placement_all_among(p, NULL, 0));
	ck_assert(placement_all_among(none, two, 2));
	ck_assert(placement_all_among(none, NULL, 0));
	for (int i = 0; i < NBLOCKS; i++) {
		owner_id(p, i, a);
		owner_id(q, i, b);
		if (strcmp(a, b) != 0) {
			ck_assert_str_eq(b, "wd");
			joined++;
		}
	}
	ck_assert_int_gt(joined, 0);
	placement_free(p);
	placement_free(q);
	placement_free(none);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("placement");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_placement_same_owner_whatever_the_order);
	tcase_add_test(tc, test_placement_a_leaving_worker_moves_only_its_blocks);
	tcase_add_test(tc, test_placement_membership_and_refusals);
	tcase_add_test(tc, test_placement_all_among);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
