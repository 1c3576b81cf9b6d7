function fcn = hcLossHandle(loss)
    % HCLOSSHANDLE  MATLAB's own loss function for a loss name, for the dlgradient fallback (internal).
    %   FCN = HCLOSSHANDLE(LOSS): LOSS is 'mse', 'crossentropy', 'l2loss', 'l1loss', 'huber' (the same
    %   definitions the Python bridge reproduces) or a function handle FCN(Y, T) returning a scalar.
    if isa(loss, 'function_handle')
        fcn = loss;
        return
    end
    switch lower(char(loss))
        case 'mse'
            fcn = @(Y, T) mse(Y, T);
        case 'crossentropy'
            fcn = @(Y, T) crossentropy(Y, T);
        case 'l2loss'
            fcn = @(Y, T) l2loss(Y, T);
        case 'l1loss'
            fcn = @(Y, T) l1loss(Y, T);
        case 'huber'
            fcn = @(Y, T) huber(Y, T);
        otherwise
            error('hessiancore:invalidOption', ['the dlgradient fallback supports the losses mse, ', ...
                                                'crossentropy, l2loss, l1loss and huber, or a function handle; ', ...
                                                'got ''%s'''], char(loss));
    end
end
