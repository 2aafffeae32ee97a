// Renders the maths that pymdownx.arithmatex (generic mode) leaves in the page: \(...\) inline
// and \[...\] display, inside .arithmatex elements, with the KaTeX vendored in assets/katex/.
// mkdocs-material's instant navigation swaps pages without a reload and announces each new
// page on its document$ observable; without it, render once the page has loaded.
(function () {
  "use strict";

  var options = {
    delimiters: [
      {left: "\\(", right: "\\)", display: false},
      {left: "\\[", right: "\\]", display: true}
    ],
    throwOnError: false
  };

  function render() {
    if (typeof renderMathInElement !== "function") {
      return;
    }
    var nodes = document.querySelectorAll(".arithmatex");
    for (var i = 0; i < nodes.length; i++) {
      renderMathInElement(nodes[i], options);
    }
  }

  if (typeof document$ !== "undefined" && document$ && typeof document$.subscribe === "function") {
    document$.subscribe(render);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", render);
  } else {
    render();
  }
})();
