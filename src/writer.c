/* writer: one-write-in-flight output queue for a libuv stream; see writer.h. */
#include "writer.h"

#define WRITER_MAX_BUFS 16

void writer_init(struct writer *w, uv_stream_t *stream, writer_done_cb done)
{
	w->stream = stream;
	bufq_init(&w->q);
	w->inflight = 0;
	w->written = 0;
	w->done = done;
	w->error = 0;
	w->req.data = w;
}

void writer_finish(struct writer *w)
{
	bufq_finish(&w->q);
	w->inflight = 0;
}

int writer_push(struct writer *w, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	return bufq_append(&w->q, data, len) == 0 ? 0 : UV_ENOMEM;
}

int writer_push_secret(struct writer *w, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	return bufq_append_secret(&w->q, data, len) == 0 ? 0 : UV_ENOMEM;
}

int writer_push_masked(struct writer *w, const void *data, size_t len, const uint8_t key[4])
{
	if (len == 0)
		return 0;
	return bufq_append_masked(&w->q, data, len, key) == 0 ? 0 : UV_ENOMEM;
}

static void on_write(uv_write_t *req, int status)
{
	struct writer *w = req->data;
	bufq_consume(&w->q, w->inflight);
	if (status == 0)
		w->written += w->inflight;
	w->inflight = 0;
	if (status < 0 && w->error == 0)
		w->error = status;
	if (w->done)
		w->done(w, status);
}

int writer_flush(struct writer *w)
{
	if (w->inflight > 0 || w->q.len == 0 || w->error < 0)
		return w->error;
	struct bufq_view views[WRITER_MAX_BUFS];
	uv_buf_t bufs[WRITER_MAX_BUFS];
	size_t n = bufq_peek(&w->q, 0, views, WRITER_MAX_BUFS);
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		bufs[i] = uv_buf_init((char *)views[i].base, (unsigned)views[i].len);
		total += views[i].len;
	}
	int rc = uv_write(&w->req, w->stream, bufs, (unsigned)n, on_write);
	if (rc < 0) {
		w->error = rc;
		return rc;
	}
	w->inflight = total;
	return 0;
}

uint64_t writer_progress(const struct writer *w)
{
	if (w->inflight == 0)
		return w->written;
	size_t left = uv_stream_get_write_queue_size(w->stream);
	return w->written + (left < w->inflight ? w->inflight - left : 0);
}

void writer_alloc_read_buffer(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	static char shared[WRITER_READ_BUFFER];
	(void)handle;
	(void)suggested;
	*buf = uv_buf_init(shared, sizeof(shared));
}
