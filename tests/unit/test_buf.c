/* Unit tests for buf.h: the chunked byte queue, checked against a flat
 * reference array through random appends, peeks and consumes. Run under
 * valgrind (meson test --setup valgrind) they also show that emptied
 * chunks are freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* A small deterministic generator, so that a failure can be replayed. */
static uint32_t rand_state;

static uint32_t next_rand(void)
{
	rand_state ^= rand_state << 13;
	rand_state ^= rand_state >> 17;
	rand_state ^= rand_state << 5;
	return rand_state;
}

static size_t chunk_count(const struct bufq *q)
{
	size_t n = 0;
	for (const struct bufq_chunk *c = q->head; c != NULL; c = c->next)
		n++;
	return n;
}

/* The queue's invariants: len is the sum of the chunks' unconsumed bytes,
 * no chunk before the tail is empty, and tail is the last chunk. */
static void check_invariants(const struct bufq *q)
{
	size_t sum = 0;
	const struct bufq_chunk *last = NULL;
	for (const struct bufq_chunk *c = q->head; c != NULL; c = c->next) {
		assert_true(c->start <= c->end);
		assert_true(c->end <= c->cap);
		assert_true(c->start < c->end);
		sum += c->end - c->start;
		last = c;
	}
	assert_int_equal(sum, q->len);
	assert_ptr_equal(last, q->tail);
	if (q->len == 0) {
		assert_null(q->head);
		assert_null(q->tail);
	}
}

/* Gathers what bufq_peek describes from skip on and compares it with the
 * reference bytes ref[skip..reflen). */
static void check_contents(const struct bufq *q, const uint8_t *ref, size_t reflen, size_t skip)
{
	struct bufq_view views[64];
	size_t n = bufq_peek(q, skip, views, 64);
	size_t off = skip;
	for (size_t i = 0; i < n; i++) {
		assert_true(views[i].len > 0);
		assert_true(off + views[i].len <= reflen);
		assert_memory_equal(views[i].base, ref + off, views[i].len);
		off += views[i].len;
	}
	if (skip <= reflen)
		assert_int_equal(off, reflen);
	else
		assert_int_equal(n, 0);
}

static void test_empty_queue(void **state)
{
	(void)state;
	struct bufq q;
	bufq_init(&q);
	assert_int_equal(q.len, 0);
	struct bufq_view v[4];
	assert_int_equal(bufq_peek(&q, 0, v, 4), 0);
	assert_int_equal(bufq_peek(&q, 10, v, 4), 0);
	bufq_consume(&q, 0);
	bufq_consume(&q, 5);
	assert_int_equal(q.len, 0);
	/* An empty append allocates nothing. */
	assert_int_equal(bufq_append(&q, "x", 0), 0);
	assert_null(q.head);
	check_invariants(&q);
	bufq_finish(&q);
	bufq_finish(&q);
}

static void test_small_append_peek_consume(void **state)
{
	(void)state;
	struct bufq q;
	bufq_init(&q);
	assert_int_equal(bufq_append(&q, "hello ", 6), 0);
	assert_int_equal(bufq_append(&q, "world", 5), 0);
	assert_int_equal(q.len, 11);
	assert_int_equal(chunk_count(&q), 1);
	check_contents(&q, (const uint8_t *)"hello world", 11, 0);
	check_contents(&q, (const uint8_t *)"hello world", 11, 6);

	struct bufq_view v[2];
	assert_int_equal(bufq_peek(&q, 0, v, 0), 0);
	assert_int_equal(bufq_peek(&q, 11, v, 2), 0);
	assert_int_equal(bufq_peek(&q, 12, v, 2), 0);

	bufq_consume(&q, 6);
	assert_int_equal(q.len, 5);
	check_contents(&q, (const uint8_t *)"world", 5, 0);
	bufq_consume(&q, 5);
	assert_int_equal(q.len, 0);
	/* An emptied queue holds no memory. */
	assert_null(q.head);
	assert_null(q.tail);

	/* And it can be used again. */
	assert_int_equal(bufq_append(&q, "again", 5), 0);
	check_contents(&q, (const uint8_t *)"again", 5, 0);
	bufq_finish(&q);
	assert_null(q.head);
	assert_int_equal(q.len, 0);
}

/* One append larger than a chunk is split over several chunks, in order. */
static void test_large_append_spans_chunks(void **state)
{
	(void)state;
	size_t len = 3 * BUFQ_CHUNK + 123;
	uint8_t *ref = malloc(len);
	assert_non_null(ref);
	for (size_t i = 0; i < len; i++)
		ref[i] = (uint8_t)(i * 7 + i / 251);
	struct bufq q;
	bufq_init(&q);
	assert_int_equal(bufq_append(&q, ref, len), 0);
	assert_int_equal(q.len, len);
	assert_true(chunk_count(&q) >= 4);
	check_invariants(&q);
	check_contents(&q, ref, len, 0);

	/* max limits the number of views; skip lands inside later chunks. */
	struct bufq_view v[2];
	size_t n = bufq_peek(&q, BUFQ_CHUNK + 5, v, 2);
	assert_int_equal(n, 2);
	assert_memory_equal(v[0].base, ref + BUFQ_CHUNK + 5, v[0].len);
	assert_memory_equal(v[1].base, ref + BUFQ_CHUNK + 5 + v[0].len, v[1].len);

	/* Consume across a chunk boundary, one chunk freed at a time. */
	size_t before = chunk_count(&q);
	bufq_consume(&q, q.head->end - q.head->start);
	assert_int_equal(chunk_count(&q), before - 1);
	check_invariants(&q);
	size_t done = len - q.len;
	check_contents(&q, ref + done, len - done, 0);
	bufq_consume(&q, q.len);
	assert_null(q.head);
	bufq_finish(&q);
	free(ref);
}

/* Random appends and consumes, with every peek compared against a flat
 * copy of what the queue should hold. */
static void test_random_against_reference(void **state)
{
	(void)state;
	const size_t cap = 8 * BUFQ_CHUNK;
	uint8_t *ref = malloc(cap);
	uint8_t *piece = malloc(2 * BUFQ_CHUNK);
	assert_non_null(ref);
	assert_non_null(piece);
	uint8_t counter = 0;

	for (uint32_t seed = 1; seed <= 8; seed++) {
		rand_state = seed * 2654435761u;
		struct bufq q;
		bufq_init(&q);
		size_t reflen = 0;
		for (int step = 0; step < 400; step++) {
			uint32_t r = next_rand();
			if (r % 3 != 0) {
				/* Mostly small appends, sometimes big ones. */
				size_t n = (r >> 8) % 16 == 0 ? next_rand() % (2 * BUFQ_CHUNK)
							     : next_rand() % 2000;
				if (reflen + n > cap)
					n = cap - reflen;
				for (size_t i = 0; i < n; i++)
					piece[i] = counter++;
				assert_int_equal(bufq_append(&q, piece, n), 0);
				memcpy(ref + reflen, piece, n);
				reflen += n;
			} else {
				size_t n = reflen == 0 ? 0 : next_rand() % (reflen + 1);
				bufq_consume(&q, n);
				memmove(ref, ref + n, reflen - n);
				reflen -= n;
			}
			assert_int_equal(q.len, reflen);
			check_invariants(&q);
			size_t skip = reflen == 0 ? 0 : next_rand() % (reflen + 1);
			check_contents(&q, ref, reflen, 0);
			check_contents(&q, ref, reflen, skip);
		}
		/* Draining everything frees every chunk. */
		bufq_consume(&q, reflen);
		assert_int_equal(q.len, 0);
		assert_null(q.head);
		assert_null(q.tail);
		bufq_finish(&q);
	}
	free(piece);
	free(ref);
}

/* bufq_finish frees chunks that were never consumed (valgrind checks). */
static void test_finish_with_data(void **state)
{
	(void)state;
	struct bufq q;
	bufq_init(&q);
	uint8_t block[1000];
	memset(block, 0xab, sizeof(block));
	for (int i = 0; i < 300; i++)
		assert_int_equal(bufq_append(&q, block, sizeof(block)), 0);
	bufq_consume(&q, 12345);
	assert_int_equal(q.len, 300 * sizeof(block) - 12345);
	bufq_finish(&q);
	assert_null(q.head);
	assert_null(q.tail);
	assert_int_equal(q.len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_queue),
		cmocka_unit_test(test_small_append_peek_consume),
		cmocka_unit_test(test_large_append_spans_chunks),
		cmocka_unit_test(test_random_against_reference),
		cmocka_unit_test(test_finish_with_data),
	};
	return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
