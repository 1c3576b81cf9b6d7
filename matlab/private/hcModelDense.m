function out = hcModelDense(prob, what)
    % HCMODELDENSE  The exact Hessian ('hessian', P x P) or its exact diagonal ('diagonal', P x 1) (internal).
    %   OUT = HCMODELDENSE(PROB, WHAT) multiplies the Hessian with the columns of the identity, in blocks
    %   (hcModelHvp): P products. The dense P x P result is checked against 'MemoryBudget' first (bytes or
    %   text such as '2GB'; default: half the memory the system reports as available, else 2 GB); the
    %   diagonal keeps one block at a time.
    P = prob.P;
    block = 32;
    if strcmp(what, 'hessian')
        need = 8 * P^2;
        budget = hcMemoryBudget(prob.MemoryBudget);
        if need > budget
            error('hessiancore:memoryBudget', ['the dense Hessian needs %.3g GB (P = %d) but the memory budget ', ...
                                               'is %.3g GB: use dlhvp, dlhessianDiag, dlhessianEigs or ', ...
                                               'dlhessianTrace (matrix-free), or raise ''MemoryBudget'''], ...
                  need / 1e9, P, budget / 1e9);
        end
        out = zeros(P, P);
    else
        out = zeros(P, 1);
    end
    for first = 1:block:P
        cols = first:min(first + block - 1, P);
        E = zeros(P, numel(cols));
        E(sub2ind(size(E), cols, 1:numel(cols))) = 1;
        HE = hcModelHvp(prob, E);
        if strcmp(what, 'hessian')
            out(:, cols) = HE;
        else
            out(cols) = HE(sub2ind(size(HE), cols, 1:numel(cols)));
        end
    end
end
