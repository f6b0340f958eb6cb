// Events list: the select-all box and the count of picked rows (served from /static/: the
// CSP allows scripts from this site only).
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  const picked = document.getElementById("picked");
  const boxes = () => Array.from(document.querySelectorAll("input.pick"));
  const show = () => {
    const n = boxes().filter((b) => b.checked).length;
    if (picked) picked.textContent = n ? `${n} selected:` : "Select events, then:";
    if (all) {
      all.checked = n > 0 && n === boxes().length;
      all.indeterminate = n > 0 && n < boxes().length;
    }
  };
  if (all) {
    all.addEventListener("change", () => {
      for (const b of boxes()) b.checked = all.checked;
      show();
    });
  }
  for (const b of boxes()) b.addEventListener("change", show);
  show();
});
