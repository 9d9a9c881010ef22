;; Test fixture `many-memories`: a component, written by hand, that instantiates one core
;; module four times. Each instance has its own linear memory of 8 MiB (128 pages), under a
;; 16 MiB `memory_mb` on its own, 32 MiB together: a host that checked each memory alone let
;; it through. It exports the hookd:plugin@0.1.0 `handle` and answers ok when it is allowed
;; to run at all. Assembled into a component by crates/hookd-test-plugins/build.rs (`wat`).
(component
  ;; The world's types, imported from hookd:plugin/types as a Rust plugin does: an exported
  ;; function may only use named types.
  (type $types (instance
    (type $e (record
      (field "id" string)
      (field "event-type" string)
      (field "payload" string)
      (field "received-at-ms" u64)
      (field "attempt" u32)))
    (export "event" (type (eq $e)))
    (type $h (variant (case "retry" string) (case "give-up" string)))
    (export "handle-error" (type (eq $h)))))
  (import "hookd:plugin/types@0.1.0" (instance $t (type $types)))
  (alias export $t "event" (type $event))
  (alias export $t "handle-error" (type $handle-error))

  (core module $m
    (memory (export "memory") 128)
    (global $next (mut i32) (i32.const 1024))
    ;; cabi_realloc: a bump allocator, enough for one call's arguments.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
          (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $next (i32.add (local.get $at) (local.get 3)))
      (local.get $at))
    ;; handle(event) -> result<_, handle-error>: writes `ok` (discriminant 0) at address 16.
    (func (export "handle")
      (param i32 i32 i32 i32 i32 i32 i64 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.const 16))
  )
  (core instance $a (instantiate $m))
  (core instance $b (instantiate $m))
  (core instance $c (instantiate $m))
  (core instance $d (instantiate $m))
  (func (export "handle") (param "event" $event) (result (result (error $handle-error)))
    (canon lift (core func $a "handle")
      (memory (core memory $a "memory"))
      (realloc (core func $a "realloc"))))
)
