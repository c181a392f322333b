/**
 * FIFO with O(1) shift: an array and a head index, compacted once the consumed prefix is half
 * the array. Used for the control queue, the round-robin ring and each stream's send queue.
 */
export class Queue<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head]!;
    (this.items as Array<T | undefined>)[this.head] = undefined;
    this.head++;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Replaces the head item (a partly consumed chunk). */
  replaceHead(item: T): void {
    this.items[this.head] = item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }

  /** Iterates from head to tail without consuming. */
  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i]!;
  }
}
