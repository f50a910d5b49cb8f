/* Unit tests for liveness.h: the keepalive's judgement of the gateway,
 * driven through scripted samples of the connection, one check every
 * quarter interval as the listener's timer runs it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "liveness.h"

#define INTERVAL 1000
#define TICK (INTERVAL / 4)

/* A connection as the samples describe it, changed by the scripts. */
struct conn {
	struct liveness lv;
	struct liveness_sample s;
	uint64_t now;
	int pings;
};

static void conn_init(struct conn *c, bool tcp)
{
	memset(c, 0, sizeof(*c));
	c->now = 10000;
	c->s.tcp = tcp;
	c->s.has_window = tcp;
	c->s.window = 65536;
	liveness_init(&c->lv, c->now);
}

/* One keepalive tick: returns the verdict; a Ping asked for is sent (the
 * caller's script decides whether it is answered). */
static enum liveness_verdict tick(struct conn *c)
{
	c->now += TICK;
	enum liveness_verdict v = liveness_check(&c->lv, &c->s, c->now, INTERVAL);
	if (v == LIVENESS_PING) {
		liveness_pinged(&c->lv, c->now);
		c->pings++;
		/* Into an idle connection the Ping is written at once and the
		 * gateway's kernel acknowledges it, whether or not anything above
		 * it will answer; behind a queue it waits like the rest. */
		if (c->s.queued == 0 && c->s.unacked == 0 && c->s.notsent == 0) {
			c->s.written += 14;
			c->s.acked += 14;
		}
	}
	return v;
}

/* Ticks until the verdict is DEAD, at most max ticks; returns the ticks taken
 * or -1. */
static int ticks_to_death(struct conn *c, int max, void (*each)(struct conn *c))
{
	for (int i = 1; i <= max; i++) {
		if (each)
			each(c);
		if (tick(c) == LIVENESS_DEAD)
			return i;
	}
	return -1;
}

static void test_a_silent_idle_gateway_is_dead_after_two_intervals(void **state)
{
	(void)state;
	struct conn c;
	conn_init(&c, true);
	int n = ticks_to_death(&c, 40, NULL);
	/* Two intervals of silence, checked every quarter interval; the Ping's
	 * own write and acknowledgement are no sign of life. */
	assert_int_equal(n, 8);
	assert_int_equal(c.pings, 1);
	/* The same without the kernel's view. */
	conn_init(&c, false);
	assert_int_equal(ticks_to_death(&c, 40, NULL), 8);
}

static void answer_pings(struct conn *c)
{
	if (c->lv.ping_at != 0)
		liveness_heard(&c->lv, c->now);
}

static void test_an_answering_gateway_lives(void **state)
{
	(void)state;
	struct conn c;
	conn_init(&c, true);
	assert_int_equal(ticks_to_death(&c, 400, answer_pings), -1);
	/* A Ping after each interval of silence, not one per tick. */
	assert_true(c.pings >= 400 / 5 && c.pings <= 400 / 4);
}

/* The gateway's target reads slowly: the tunnel's queue stays full and
 * drains a little at each tick; nothing comes back. */
static void slow_drain(struct conn *c)
{
	c->s.queued = 512 * 1024;
	c->s.written += 4096;
	c->s.unacked = 10;
	c->s.acked += 4096;
}

static void test_a_flow_controlled_gateway_is_not_dead(void **state)
{
	(void)state;
	struct conn c;
	conn_init(&c, true);
	assert_int_equal(ticks_to_death(&c, 400, slow_drain), -1);
	/* Without TCP_INFO the writer's progress is enough. */
	conn_init(&c, false);
	assert_int_equal(ticks_to_death(&c, 400, slow_drain), -1);
}

/* The queue is full and stays so: nothing moves at all. */
static void stuck(struct conn *c)
{
	c->s.queued = 512 * 1024;
	c->s.unacked = 10;
}

static void test_a_stuck_queue_is_dead(void **state)
{
	(void)state;
	struct conn c;
	conn_init(&c, true);
	int n = ticks_to_death(&c, 40, stuck);
	assert_true(n > 0 && n <= 8);
}

/* The gateway's window is full: the kernel holds bytes it may not send,
 * nothing is in flight, and its window probes are answered. */
static void window_full(struct conn *c)
{
	c->s.queued = 512 * 1024;
	c->s.unacked = 0;
	c->s.notsent = 2 << 20;
	c->s.window = 0;
	c->s.probes = 0;
}

static void window_full_unanswered(struct conn *c)
{
	window_full(c);
	c->s.probes = 3;
}

static void test_a_full_window_lives_while_probes_are_answered(void **state)
{
	(void)state;
	struct conn c;
	conn_init(&c, true);
	assert_int_equal(ticks_to_death(&c, 400, window_full), -1);
	/* Probes that go unanswered: the gateway's host is gone. */
	conn_init(&c, true);
	int n = ticks_to_death(&c, 40, window_full_unanswered);
	assert_true(n > 0 && n <= 8);
}

/* Everything was handed over, and the gateway reads what it holds: its
 * window keeps opening, seen through the kernel's keepalive probes; the
 * Ping's answer is behind that data. */
static void reading_its_backlog(struct conn *c)
{
	c->s.queued = 0;
	c->s.unacked = 0;
	c->s.notsent = 0;
	if (c->s.window < 6 << 20)
		c->s.window += 64 * 1024;
}

static void test_a_gateway_reading_its_backlog_is_not_dead(void **state)
{
	(void)state;
	struct conn c;
	conn_init(&c, true);
	c.s.window = 0;
	/* About 96 ticks of window growth: longer than two intervals. */
	int n = ticks_to_death(&c, 120, reading_its_backlog);
	assert_int_equal(c.pings, 1);
	/* Once the window is fully open and the Ping still unanswered, the
	 * gateway is gone: two intervals after the last growth. */
	assert_true(n > 96 && n <= 96 + 8 + 1);
	/* A window that shrinks (more of ours arrived) is no sign of life. */
	conn_init(&c, true);
	c.s.window = 1 << 20;
	for (int i = 0; i < 8; i++) {
		c.s.window -= 4096;
		if (tick(&c) == LIVENESS_DEAD) {
			assert_int_equal(i, 7);
			return;
		}
	}
	fail_msg("a shrinking window kept the gateway alive");
}

static void test_progress_after_nothing_was_waiting_is_ignored(void **state)
{
	(void)state;
	struct conn c;
	conn_init(&c, true);
	/* Bytes appear and leave between two ticks, nothing is waiting at
	 * either: the connection is idle for the keepalive, and the Ping must
	 * be answered. */
	for (int i = 0; i < 8; i++) {
		c.s.written += 100;
		c.s.acked += 100;
		enum liveness_verdict v = tick(&c);
		if (v == LIVENESS_DEAD) {
			assert_int_equal(i, 7);
			return;
		}
	}
	fail_msg("not dead after two intervals");
}

static void test_quiet_is_counted_from_the_last_sign(void **state)
{
	(void)state;
	struct liveness lv;
	liveness_init(&lv, 500);
	assert_int_equal(liveness_quiet(&lv, 400), 0);
	assert_int_equal(liveness_quiet(&lv, 1700), 1200);
	liveness_pinged(&lv, 1700);
	liveness_heard(&lv, 1800);
	assert_int_equal(lv.ping_at, 0);
	assert_int_equal(liveness_quiet(&lv, 1800), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_silent_idle_gateway_is_dead_after_two_intervals),
		cmocka_unit_test(test_an_answering_gateway_lives),
		cmocka_unit_test(test_a_flow_controlled_gateway_is_not_dead),
		cmocka_unit_test(test_a_stuck_queue_is_dead),
		cmocka_unit_test(test_a_full_window_lives_while_probes_are_answered),
		cmocka_unit_test(test_a_gateway_reading_its_backlog_is_not_dead),
		cmocka_unit_test(test_progress_after_nothing_was_waiting_is_ignored),
		cmocka_unit_test(test_quiet_is_counted_from_the_last_sign),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
