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

/* Copies n bytes XORed with the 4-byte key, starting at key position
 * `phase`; eight bytes at a time where it can. */
static void copy_masked(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], size_t phase)
{
	uint8_t rot[8];
	for (size_t i = 0; i < 8; i++)
		rot[i] = key[(phase + i) & 3];
	uint64_t k8;
	memcpy(&k8, rot, 8);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v;
		memcpy(&v, src + i, 8);
		v ^= k8;
		memcpy(dst + i, &v, 8);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ rot[i & 7];
}

static int append(struct bufq *q, const void *data, size_t len, const uint8_t *key)
{
	const uint8_t *p = data;
	size_t done = 0;
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
		if (key != NULL)
			copy_masked(t->data + t->end, p, n, key, done);
		else
			memcpy(t->data + t->end, p, n);
		t->end += n;
		q->len += n;
		p += n;
		done += n;
		len -= n;
	}
	return 0;
}

int bufq_append(struct bufq *q, const void *data, size_t len)
{
	return append(q, data, len, NULL);
}

int bufq_append_masked(struct bufq *q, const void *data, size_t len, const uint8_t key[4])
{
	return append(q, data, len, key);
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
