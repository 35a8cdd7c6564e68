// The request page's record questions: while one is queued or running, poll its
// status and reload the page once it has an answer (or failed).
(function () {
  const open = document.querySelectorAll(
    '[data-record-query-status="queued"], [data-record-query-status="running"]'
  );
  if (!open.length) return;
  async function poll() {
    for (const article of open) {
      try {
        const r = await fetch(article.dataset.statusUrl, { headers: { Accept: "application/json" } });
        if (r.ok) {
          const q = await r.json();
          if (q.status === "done" || q.status === "failed") { location.reload(); return; }
        }
      } catch (e) { /* the server may restart; keep polling */ }
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
