"use strict";
// The invitation's token is in the link's fragment, which browsers never send to a
// server (so no log has it): put it in the form.
(() => {
  const token = decodeURIComponent(window.location.hash.slice(1));
  document.getElementById("token").value = token;
  if (!token) {
    const note = document.createElement("p");
    note.className = "error";
    note.textContent = "This page needs the whole invitation link, with the part after #.";
    document.getElementById("invitation").before(note);
  }
})();
