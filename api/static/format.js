// Words for what the API reports: every state is shown as a word, never as a colour alone.

const STATUS_WORDS = {
  closed: "Closed",
  opening: "Opening",
  opened: "Opened",
  closing: "Closing",
  error: "Error",
};

const QUALITY_WORDS = {
  good: "Good",
  stale: "Stale",
  comm_lost: "Comm lost",
};

export function statusWord(status) {
  return STATUS_WORDS[status] ?? "Unknown";
}

export function qualityWord(quality) {
  return QUALITY_WORDS[quality] ?? quality ?? "Unknown";
}

// A PLC fault code name such as "motor_fault", as a person reads it.
export function faultWord(fault) {
  return fault ? fault.replaceAll("_", " ") : "None";
}

export function occupancyWord(occupied) {
  if (occupied === null || occupied === undefined) {
    return "Unknown";
  }
  return occupied ? "Present" : "Clear";
}

export function barrierLabel({ barrier_id: id, name }) {
  return name ? `#${id} ${name}` : `Barrier ${id}`;
}

export function pendingWord(pending) {
  return pending ? `${pending.kind} by ${pending.actor} (${pending.state})` : "";
}

// Age of a reading in seconds, as "12 s ago", "3 min 04 s ago", "2 h 05 min ago".
export function ageWords(seconds) {
  if (seconds === null) {
    return "Never";
  }
  if (seconds < 1) {
    return "< 1 s ago";
  }
  const whole = Math.floor(seconds);
  if (whole < 60) {
    return `${whole} s ago`;
  }
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${twoDigits(whole % 60)} s ago`;
  }
  return `${Math.floor(whole / 3600)} h ${twoDigits(Math.floor(whole / 60) % 60)} min ago`;
}

export function clockTime(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

function twoDigits(n) {
  return String(n).padStart(2, "0");
}
