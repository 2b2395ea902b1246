/* jewelrec widget: "similar pieces" on a shop's own product pages.

   <div data-jewelrec-similar="PRODUCT_ID" data-k="8"></div>
   <script src="https://RECOMMENDER/widget.js" defer></script>

   Each such element becomes a strip of the most similar catalog pieces (image, title, price,
   link), asked from the server this script came from (GET /api/products/{id}/similar). That
   server answers the shop's origin only if its operator allowed it (jewelrec serve
   --allow-origin https://shop.example); otherwise the browser withholds the answer and the
   element stays empty. Catalog text is set with textContent, never parsed as HTML; links are
   followed only when they are http(s). No inline styles: the strip uses the classes
   jewelrec-strip, jewelrec-card, jewelrec-title, jewelrec-price, which the shop can style. */
(function () {
  "use strict";

  var script = document.currentScript;
  var scriptUrl = script && script.src ? new URL(script.src, document.baseURI) : null;
  if (!scriptUrl) {
    return;
  }
  var base = scriptUrl.origin;
  var DEFAULT_K = 8;
  var MAX_K = 50;

  function httpLink(text) {
    try {
      var url = new URL(text, base);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function formatPrice(price, currency) {
    try {
      return new Intl.NumberFormat(document.documentElement.lang || undefined, {
        style: "currency", currency: currency || "USD"
      }).format(price);
    } catch (e) {
      return String(price) + " " + (currency || "");
    }
  }

  function card(result) {
    var link = httpLink(result.url);
    var item = document.createElement(link ? "a" : "div");
    item.className = "jewelrec-card";
    item.setAttribute("data-id", String(result.id));
    if (link) {
      item.href = link;
      item.target = "_blank";
      item.rel = "noopener noreferrer";
    }
    var image = httpLink(result.image_url);
    if (image) {
      var img = document.createElement("img");
      img.src = image;
      img.alt = String(result.title);
      img.loading = "lazy";
      img.width = 160;
      img.height = 160;
      item.appendChild(img);
    }
    var title = document.createElement("span");
    title.className = "jewelrec-title";
    title.textContent = String(result.title);
    item.appendChild(title);
    var price = document.createElement("span");
    price.className = "jewelrec-price";
    price.textContent = formatPrice(Number(result.price), String(result.currency || ""));
    item.appendChild(price);
    return item;
  }

  function render(element, answer) {
    var strip = document.createElement("div");
    strip.className = "jewelrec-strip";
    strip.setAttribute("role", "list");
    (answer.results || []).forEach(function (result) {
      var item = card(result);
      item.setAttribute("role", "listitem");
      strip.appendChild(item);
    });
    element.replaceChildren(strip);
    element.setAttribute("data-jewelrec-state", "shown");
  }

  function fill(element) {
    var id = (element.getAttribute("data-jewelrec-similar") || "").trim();
    if (!id || element.getAttribute("data-jewelrec-state")) {
      return;
    }
    element.setAttribute("data-jewelrec-state", "loading");
    var k = parseInt(element.getAttribute("data-k") || "", 10);
    k = isFinite(k) && k > 0 ? Math.min(k, MAX_K) : DEFAULT_K;
    var url = base + "/api/products/" + encodeURIComponent(id) + "/similar?k=" + k;
    fetch(url, { mode: "cors", credentials: "omit" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (answer) { render(element, answer); })
      .catch(function (error) {
        element.setAttribute("data-jewelrec-state", "failed");
        if (window.console) {
          window.console.warn("jewelrec widget: no similar pieces for " + id + ": " + error);
        }
      });
  }

  function fillAll() {
    document.querySelectorAll("[data-jewelrec-similar]").forEach(fill);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", fillAll);
  } else {
    fillAll();
  }
})();
