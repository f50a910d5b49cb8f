/* buf: chunked byte queue; see buf.h. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void bufq_init(struct bufq *q)
{
	q->head = q->tail = NULL;
	q->len = 0;
}

void bufq_finish(struct bufq *q)
{
	struct bufq_chunk *c = q->head;
	while (c != NULL) {
		struct bufq_chunk *next = c->next;
		free(c);
		c = next;
	}
	bufq_init(q);
}

int bufq_append(struct bufq *q, const void *data, size_t len)
{
	const uint8_t *p = data;
	while (len > 0) {
		struct bufq_chunk *t = q->tail;
		if (t == NULL || t->end == t->cap) {
			/* Small first chunks keep a quiet tunnel small; a busy
			 * one gets full-size chunks. */
			size_t cap = q->len + len < BUFQ_CHUNK / 4 ? BUFQ_CHUNK / 4 : BUFQ_CHUNK;
			struct bufq_chunk *c = malloc(sizeof(*c) + cap);
			if (c == NULL)
				return -1;
			c->next = NULL;
			c->start = c->end = 0;
			c->cap = cap;
			if (t == NULL)
				q->head = c;
			else
				t->next = c;
			q->tail = t = c;
		}
		size_t n = t->cap - t->end;
		if (n > len)
			n = len;
		memcpy(t->data + t->end, p, n);
		t->end += n;
		q->len += n;
		p += n;
		len -= n;
	}
	return 0;
}

size_t bufq_peek(const struct bufq *q, size_t skip, struct bufq_view *views, size_t max)
{
	size_t n = 0;
	for (const struct bufq_chunk *c = q->head; c != NULL && n < max; c = c->next) {
		size_t avail = c->end - c->start;
		if (skip >= avail) {
			skip -= avail;
			continue;
		}
		views[n].base = c->data + c->start + skip;
		views[n].len = avail - skip;
		skip = 0;
		n++;
	}
	return n;
}

void bufq_consume(struct bufq *q, size_t len)
{
	while (len > 0 && q->head != NULL) {
		struct bufq_chunk *c = q->head;
		size_t avail = c->end - c->start;
		size_t n = len < avail ? len : avail;
		c->start += n;
		q->len -= n;
		len -= n;
		if (c->start == c->end) {
			q->head = c->next;
			if (q->head == NULL)
				q->tail = NULL;
			free(c);
		}
	}
}
