/* liveness: the keepalive's judgement; see liveness.h. */
#include "liveness.h"

void liveness_init(struct liveness *lv, uint64_t now)
{
	*lv = (struct liveness){.alive_at = now};
}

void liveness_heard(struct liveness *lv, uint64_t now)
{
	lv->alive_at = now;
	lv->ping_at = 0;
}

void liveness_pinged(struct liveness *lv, uint64_t now)
{
	lv->ping_at = now;
}

uint64_t liveness_quiet(const struct liveness *lv, uint64_t now)
{
	return now > lv->alive_at ? now - lv->alive_at : 0;
}

/* Did bytes on their way to the gateway move between p and s? Only bytes
 * that were waiting at p count: a Ping sent into an idle connection is
 * written and acknowledged by the gateway's kernel even when nothing
 * above it will ever answer. */
static bool moved(const struct liveness_sample *p, const struct liveness_sample *s)
{
	bool waiting = p->queued > 0 || (p->tcp && (p->unacked > 0 || p->notsent > 0));
	if (!waiting)
		return false;
	if (s->written != p->written)
		return true;
	if (!s->tcp || !p->tcp)
		return false;
	if (s->acked != p->acked)
		return true;
	/* Nothing in flight but bytes to send: the window is full and the
	 * kernel probes it; answered probes mean the gateway's stack is there
	 * and its reader merely slow. */
	return s->unacked == 0 && s->notsent > 0 && s->probes == 0;
}

/* The gateway read some of what it holds: its window opened. */
static bool opened(const struct liveness_sample *p, const struct liveness_sample *s)
{
	return p->tcp && s->tcp && p->has_window && s->has_window && s->window > p->window;
}

enum liveness_verdict liveness_check(struct liveness *lv, const struct liveness_sample *s, uint64_t now,
				     uint64_t interval)
{
	if (lv->have_last && (moved(&lv->last, s) || opened(&lv->last, s)))
		lv->alive_at = now; /* an unanswered Ping stays so: its answer is behind the data */
	lv->last = *s;
	lv->have_last = true;
	uint64_t quiet = liveness_quiet(lv, now);
	if (quiet >= 2 * interval)
		return LIVENESS_DEAD;
	if (quiet >= interval && lv->ping_at == 0)
		return LIVENESS_PING;
	return LIVENESS_OK;
}
