function result = hcMatlabBackend(fcn, net, X, T, opts, args, kwargs)
    % HCMATLABBACKEND  The MATLAB backend: what hcCallPython(hcRequest(...)) returns, computed in MATLAB (internal).
    %   RESULT = HCMATLABBACKEND(FCN, NET, X, T, OPTS, ARGS, KWARGS) takes the arguments of hcRequest and
    %   returns a result of the same form as the Python bridge's bridge.api.FCN, so that the wrappers
    %   post-process both alike:
    %     'hessian'        P x P          'diagonal'  P x 1          'hvp'  P x 1 (ARGS{1} the vector)
    %     'eigs'           struct values (k x 1, ascending), vectors (P x k), residuals (k x 1);
    %                      KWARGS.k, KWARGS.which ('LA', 'SA', 'LM', 'BE')
    %     'trace'          struct trace, stderr, num_matvecs; KWARGS.num_matvecs, .method, .seed
    %     'newton_update'  struct values (P x 1, the new learnables), loss_before, loss_after;
    %                      KWARGS.damping, KWARGS.lr
    %     'plan'           struct of text fields dense, diagonal, products, block_products, budget, and
    %                      parameters (P), as bridge.api.plan's, saying the MATLAB backend computes them
    %   Everything comes from Hessian-vector products by double backpropagation of the loss
    %   (OPTS.ModelLoss, or MATLAB's loss function named by OPTS.Loss on predict(NET, X)) with dlfeval and
    %   dlgradient(..., 'EnableHigherDerivatives', true): see hcModelProblem and hcModelEval. Errors of the
    %   toolbox ('hessiancore:*') carry the name of the wrapper first ('dlhessian: ...').
    if nargin < 6
        args = {};
    end
    if nargin < 7
        kwargs = struct();
    end
    wrappers = struct('hessian', 'dlhessian', 'diagonal', 'dlhessianDiag', 'hvp', 'dlhvp', ...
                      'eigs', 'dlhessianEigs', 'trace', 'dlhessianTrace', 'newton_update', 'dlnewtonUpdate', ...
                      'plan', 'dlhessianPlan');
    if ~isfield(wrappers, fcn)
        error('hessiancore:invalidInput', 'the MATLAB backend has no function ''%s''', fcn);
    end
    try
        result = compute(fcn, net, X, T, opts, args, kwargs);
    catch err
        % Every message names the wrapper the user called, as the Python bridge's do (bridge.identifiers).
        wrapper = wrappers.(fcn);
        if ~strncmp(err.identifier, 'hessiancore:', 12) || strncmp(err.message, [wrapper, ':'], numel(wrapper) + 1)
            rethrow(err);
        end
        error(err.identifier, '%s: %s', wrapper, err.message);
    end
end

function result = compute(fcn, net, X, T, opts, args, kwargs)
    prob = hcModelProblem(net, X, T, opts);
    switch fcn
        case 'hessian'
            result = hcModelDense(prob, 'hessian');
        case 'diagonal'
            result = hcModelDense(prob, 'diagonal');
        case 'hvp'
            result = hcModelHvp(prob, args{1});
        case 'eigs'
            result = hcModelEigs(prob, kwargs.k, kwargs.which);
        case 'trace'
            result = hcModelTrace(prob, kwargs.num_matvecs, kwargs.method, kwargs.seed);
        case 'newton_update'
            result = hcModelNewton(prob, kwargs.damping, kwargs.lr);
        case 'plan'
            result = planOf(prob);
    end
end

function info = planOf(prob)
    % What dlhessianPlan reports on the MATLAB backend: every path is dlgradient's double backpropagation.
    hvp = ['a Hessian-vector product by double backpropagation in MATLAB (dlfeval, dlgradient with ', ...
           '''EnableHigherDerivatives'', true)'];
    info = struct('dense', ['MATLAB backend: P products of ', hvp, ' with unit vectors, in column blocks'], ...
                  'diagonal', 'MATLAB backend: the diagonal of those P products', ...
                  'products', ['MATLAB backend: ', hvp], ...
                  'block_products', 'MATLAB backend: one product per column', ...
                  'budget', 'MemoryBudget checked in MATLAB before each P-sized allocation', ...
                  'parameters', prob.P);
end
