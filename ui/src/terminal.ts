// The terminal pane: xterm.js showing the program's output and taking its input.
//
// Two modes:
// - "tty": the program has a pseudo-terminal in the sandbox. Keys go to it raw
//   (the pty echoes, edits lines and turns Ctrl-C into SIGINT); nothing is echoed here.
// - "pipe": the program reads a pipe, so the browser echoes what the user types
//   and sends whole lines (Enter), like a cooked TTY; stderr is shown in red.

import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";

export type TerminalMode = "tty" | "pipe";

export interface TerminalHandlers {
  onRaw(data: string): void; // tty mode: what the keyboard produced, as is
  onLine(data: string): void; // pipe mode: a finished line, including its "\n"
  onEof(): void; // pipe mode: Ctrl-D
  onInterrupt(): void; // pipe mode: Ctrl-C
  onResize(cols: number, rows: number): void;
}

const RED = "\x1b[31m";
const DIM = "\x1b[2m";
const BOLD = "\x1b[1m";
const RESET = "\x1b[0m";
// Escape sequences the keyboard produces (arrows, function keys): ignored.
const ESCAPE_SEQUENCE = /^\x1b(?:\[[0-9;?]*[ -/]*[@-~]|O.|.)?/;

export class TerminalPane {
  readonly term: Terminal;
  private readonly fitAddon = new FitAddon();
  private line = ""; // what the user typed since the last Enter
  private lastWasCR = false;
  private currentMode: TerminalMode = "tty";
  /** Typed keys reach the program only while this is true. */
  inputEnabled = false;

  constructor(parent: HTMLElement, private readonly handlers: TerminalHandlers) {
    this.term = new Terminal({
      convertEol: false, // see `mode`
      cursorBlink: true,
      fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: {
        background: "#0b1120",
        foreground: "#e5e7eb",
        cursor: "#e5e7eb",
        selectionBackground: "#334155",
        red: "#ff7b7b",
        brightRed: "#ffa3a3",
      },
    });
    this.term.loadAddon(this.fitAddon);
    // xterm takes over the element it opens in; keep the padded box outside.
    const host = parent.appendChild(document.createElement("div"));
    host.className = "terminal-host";
    this.term.open(host);
    // Let Tab move the focus out of the terminal (keyboard-only use), and let
    // Ctrl/Cmd-Enter reach the page's Run shortcut.
    this.term.attachCustomKeyEventHandler(
      (e) => !(e.key === "Tab" || (e.key === "Enter" && (e.ctrlKey || e.metaKey))),
    );
    this.term.onData((data) => this.handleTyped(data));
    this.term.onResize(({ cols, rows }) => {
      this.showSize(parent);
      this.handlers.onResize(cols, rows);
    });
    this.showSize(parent);
    new ResizeObserver(() => this.fit()).observe(host);
    this.fit();
  }

  get mode(): TerminalMode {
    return this.currentMode;
  }

  set mode(mode: TerminalMode) {
    this.currentMode = mode;
    this.line = "";
    // A pipe carries bare "\n" line ends, which the terminal must turn into
    // "\r\n"; a pty already does that (ONLCR), and a bare "\n" from a full-screen
    // program means "cursor down".
    this.term.options.convertEol = mode === "pipe";
  }

  /** The size on the element, for people inspecting it and for the browser tests. */
  private showSize(parent: HTMLElement): void {
    parent.dataset.cols = String(this.term.cols);
    parent.dataset.rows = String(this.term.rows);
  }

  /** The size to tell the server (which accepts 1 to 1000 each way). */
  get size(): { cols: number; rows: number } {
    return { cols: Math.min(this.term.cols, 1000), rows: Math.min(this.term.rows, 1000) };
  }

  fit(): void {
    try {
      this.fitAddon.fit();
    } catch {
      // not laid out yet (hidden); the next resize fits it
    }
  }

  focus(): void {
    this.term.focus();
  }

  reset(): void {
    this.line = "";
    this.term.reset();
  }

  stdout(data: string): void {
    this.term.write(data);
  }

  stderr(data: string): void {
    this.term.write(RED + data + RESET);
  }

  /** A line from icee itself (not the program), set apart from its output. */
  note(text: string, kind: "info" | "error" = "info"): void {
    const style = kind === "error" ? BOLD + RED : DIM;
    const column = this.term.buffer.active.cursorX;
    this.term.write(`${column > 0 ? "\r\n" : ""}${style}${text}${RESET}\r\n`);
  }

  /** Discards a half-typed line (e.g. when the program ends). */
  dropPendingInput(): void {
    this.line = "";
  }

  private handleTyped(data: string): void {
    if (!this.inputEnabled) return;
    if (this.currentMode === "tty") {
      this.handlers.onRaw(data);
      return;
    }
    let rest = data;
    while (rest.length > 0) {
      if (rest[0] === "\x1b") {
        const seq = ESCAPE_SEQUENCE.exec(rest);
        rest = rest.slice(seq ? seq[0].length : 1);
        continue;
      }
      const char = String.fromCodePoint(rest.codePointAt(0) ?? 0);
      rest = rest.slice(char.length);
      this.handleChar(char);
    }
  }

  private endLine(): void {
    this.term.write("\r\n");
    this.handlers.onLine(this.line + "\n");
    this.line = "";
  }

  private handleChar(char: string): void {
    const wasCR = this.lastWasCR;
    this.lastWasCR = char === "\r";
    switch (char) {
      case "\n":
        if (!wasCR) this.endLine(); // "\r\n" in pasted text is one line end
        return;
      case "\r":
        this.endLine();
        return;
      case "\x7f": // Backspace
      case "\b":
        if (this.line.length > 0) {
          const chars = Array.from(this.line);
          chars.pop();
          this.line = chars.join("");
          this.term.write("\b \b");
        }
        return;
      case "\x15": // Ctrl-U: erase the line
        this.term.write("\b \b".repeat(Array.from(this.line).length));
        this.line = "";
        return;
      case "\x04": // Ctrl-D: send what is typed, then end the input
        if (this.line.length > 0) {
          this.handlers.onLine(this.line);
          this.line = "";
        }
        this.term.write(DIM + "^D" + RESET + "\r\n");
        this.handlers.onEof();
        return;
      case "\x03": // Ctrl-C
        this.term.write(DIM + "^C" + RESET + "\r\n");
        this.line = "";
        this.handlers.onInterrupt();
        return;
      default:
        if (char < " ") return; // other control characters
        this.line += char;
        this.term.write(char);
    }
  }
}
